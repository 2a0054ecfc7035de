"""Failure class 4: paths. An --out that is a file, lies inside a file, inside /proc or is unwritable, and a
`compare --plot` onto a folder or into a missing folder are one line and exit code 2, checked before any
training; `RunFolder.create` itself raises a UserError naming the path and leaves nothing behind."""

import os

import pytest

from learnloop.engine.run import RunFolder
from learnloop.errors import UserError

from hardening_helpers import QUICK, assert_one_error_line, quick_run, run_cli

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _bad_roots(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {
        "a file": (a_file, "is not a folder"),
        "inside a file": (a_file / "sub", "is not a folder"),
        "inside /proc": (tmp_path.joinpath("/proc/forbidden/x"), "/proc"),
        "a name too long": (tmp_path / ("x" * 300), "too long"),
    }


@pytest.mark.parametrize("case", ["a file", "inside a file", "inside /proc", "a name too long"])
@pytest.mark.parametrize("command", ["run", "lr-find"])
def test_out_that_cannot_hold_runs(capsys, tmp_path, case, command):
    out, fragment = _bad_roots(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    code, stdout, err = run_cli(capsys, command, QUICK, "--out", out)
    assert code == 2, err
    assert_one_error_line(err, "--out", str(out), fragment)
    assert sorted(tmp_path.rglob("*")) == before and stdout == ""


@pytest.mark.skipif(ROOT, reason="root may write into a read-only folder")
def test_out_unwritable(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_cli(capsys, "run", QUICK, "--out", locked / "runs")
        assert code == 2
        assert_one_error_line(err, "--out", "cannot write in")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("case", ["a file", "inside a file", "inside /proc", "a name too long"])
def test_run_folder_create_raises_user_error_naming_the_root(tmp_path, case):
    root, _ = _bad_roots(tmp_path)[case]
    with pytest.raises(UserError, match="cannot create a run folder under") as e:
        RunFolder.create(root, "recipe", {"a": 1})
    assert str(root) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "a_file" / "recipe").exists()


def test_run_folder_create_makes_distinct_folders(tmp_path):
    a = RunFolder.create(tmp_path, "r", {"x": 1})
    b = RunFolder.create(tmp_path, "r", {"x": 2})
    assert a.path != b.path and a.config_path.is_file() and b.config_path.is_file()
    with pytest.raises(UserError, match="invalid recipe name"):
        RunFolder.create(tmp_path, "../escape", {})


def test_compare_plot_targets(capsys, tmp_path):
    folder = quick_run(capsys, tmp_path / "runs")
    cases = [
        (tmp_path, "is a folder"),                                   # onto a folder
        (tmp_path / "missing" / "cmp.png", "does not exist"),        # into a missing folder
        (tmp_path.joinpath("/proc/cmp.png"), "cannot write in"),     # into /proc
    ]
    for plot, fragment in cases:
        code, out, err = run_cli(capsys, "compare", folder, folder, "--plot", plot)
        assert code == 2, (plot, err)
        assert_one_error_line(err, "--plot", str(plot), fragment)
        assert out == ""                                              # refused before the table
    assert not (tmp_path / "missing").exists()
    code, out, err = run_cli(capsys, "compare", folder, folder, "--plot", tmp_path / "ok.png")
    assert code == 0 and (tmp_path / "ok.png").is_file(), err


def test_run_dir_arguments_that_are_not_run_folders(capsys, tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("{}")
    for command in ("resume", "eval"):
        for path, fragment in ((tmp_path / "nope", "no such file or folder"), (a_file, "not a run folder"),
                               (tmp_path, "not a run folder")):
            code, _, err = run_cli(capsys, command, path)
            assert code == 2, err
            assert_one_error_line(err, fragment)
