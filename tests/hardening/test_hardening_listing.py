"""Failure class 7: `runs` and `compare` with one corrupt run among good ones show the good runs, and mark
the bad one with one short reason, instead of printing only an error (or a traceback)."""

import json
import os
import subprocess
import sys

import pytest

from hardening_helpers import QUICK, REPO, assert_one_error_line, child_env, copy_run, run_cli


def _write(name, content: bytes):
    return lambda run: (run / name).write_bytes(content)


def _folder_instead(name):
    def damage(run):
        (run / name).unlink(missing_ok=True)
        (run / name).mkdir()
    return damage


DAMAGE = {
    "config.json a list": (_write("config.json", b"[]"), "must hold a JSON object"),
    "config.json not UTF-8": (_write("config.json", b"\xff\xfe{}"), "not UTF-8"),
    "config.json seed negative": (lambda r: _edit_config(r, seed=-4), "seed: must be an integer"),
    "metrics.json garbage": (_write("metrics.json", b"{nope"), "not valid JSON"),
    "metrics.json a list": (_write("metrics.json", b"[1]"), "must hold a JSON object"),
    "metrics.json status a number": (_write("metrics.json", b'{"status": 3}'), "status: must be a string"),
    "metrics.json nested 10000 deep": (_write("metrics.json", b"[" * 10_000 + b"]" * 10_000), "nested deeper"),
    "metrics.json a folder": (_folder_instead("metrics.json"), "is a folder"),
    "eval.json broken": (_write("eval.json", b"\x00\x01"), "not valid JSON"),
}


def _edit_config(run, **fields):
    data = json.loads((run / "config.json").read_text())
    data.update(fields)
    (run / "config.json").write_text(json.dumps(data))


def _three_runs(source_run, root, damage):
    good = [copy_run(source_run, root / "a"), copy_run(source_run, root / "b")]
    bad = copy_run(source_run, root / "c")
    damage(bad)
    # all three under one root, with distinct folder names
    folders = []
    for i, f in enumerate(good + [bad]):
        dst = root / "all" / QUICK / f"{f.name}-{i}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        f.rename(dst)
        folders.append(dst)
    return folders[:2], folders[2]


@pytest.mark.parametrize("case", list(DAMAGE))
def test_runs_lists_the_good_runs_and_marks_the_bad_one(capsys, source_run, tmp_path, case):
    damage, reason = DAMAGE[case]
    good, bad = _three_runs(source_run, tmp_path, damage)
    code, out, err = run_cli(capsys, "runs", "--root", tmp_path / "all")
    assert code == 0, err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["recipe", "run", "status", "main", "metric"] and "problem" in lines[0]
    for g in good:
        (row,) = [x for x in lines if g.name in x]
        assert "finished" in row and "test_accuracy=" in row
    (row,) = [x for x in lines if bad.name in x]
    assert "unreadable" in row and reason in row and len(row) < 220


@pytest.mark.parametrize("case", ["config.json a list", "metrics.json garbage", "eval.json broken"])
def test_compare_shows_the_good_runs_and_names_the_bad_one(capsys, source_run, tmp_path, case):
    damage, reason = DAMAGE[case]
    good, bad = _three_runs(source_run, tmp_path, damage)
    code, out, err = run_cli(capsys, "compare", *good, bad, "--plot", tmp_path / "cmp.png")
    assert code == 0, err
    header = out.splitlines()[0]
    assert all(g.name in header for g in good) and bad.name not in header
    assert any(x.startswith("test_accuracy") for x in out.splitlines())
    (note,) = [x for x in out.splitlines() if x.startswith("not compared:")]
    assert bad.name in note and reason in note
    assert (tmp_path / "cmp.png").is_file()


def test_compare_with_no_readable_run_is_one_line(capsys, source_run, tmp_path):
    a, b = copy_run(source_run, tmp_path / "a"), copy_run(source_run, tmp_path / "b")
    (a / "config.json").write_bytes(b"[]")
    (b / "metrics.json").write_bytes(b"{")
    code, out, err = run_cli(capsys, "compare", a, b)
    assert code == 2
    assert_one_error_line(err, "none of these runs can be read")


def test_compare_plot_skips_damaged_metric_lines(capsys, source_run, tmp_path):
    a = copy_run(source_run, tmp_path / "a")
    with open(a / "metrics.jsonl", "ab") as f:
        f.write(b'{"epoch": "x", "val_loss": 1}\n{"epoch": 2, "val_loss": null}\n[1]\n\xff\n')
    code, out, err = run_cli(capsys, "compare", a, a, "--plot", tmp_path / "p.png")
    assert code == 0, err
    assert (tmp_path / "p.png").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_runs_with_a_fifo_config_does_not_block(source_run, tmp_path):
    good = copy_run(source_run, tmp_path)
    bad = tmp_path / QUICK / "20000101-000000-badbad"
    bad.mkdir()
    os.mkfifo(bad / "config.json")
    done = subprocess.run([sys.executable, "-m", "learnloop.cli", "runs", "--root", str(tmp_path)], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (row,) = [x for x in done.stdout.splitlines() if bad.name in x]
    assert "unreadable" in row and "FIFO" in row
    assert any(good.name in x and "finished" in x for x in done.stdout.splitlines())
