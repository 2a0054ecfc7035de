"""Failure class 8: a full disk (here: a real file-size limit, RLIMIT_FSIZE with SIGXFSZ ignored, so a
write fails with EFBIG) during a checkpoint write is one line and exit code 1, the last good checkpoint and
the metric history stay intact, no temporary file is left, and the run resumes once there is room.
Temporary files of a killed atomic write are removed by `RunFolder.remove_stale_temp_files`, and only those."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from learnloop.cli import _os_error
from learnloop.engine.checkpoint import load_state
from learnloop.engine.run import RunFolder
from learnloop.utils.io import is_temp_name

from hardening_helpers import REPO, assert_ends_with_error_line, child_env, quick_run, run_cli, set_epochs

resource = pytest.importorskip("resource")
LIMIT = 60_000          # bytes: above config.json, log.txt and metrics.jsonl, below one quickstart checkpoint


def _limited(limit=LIMIT):
    def preexec():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def _temp_files(folder):
    return [p for p in folder.rglob("*") if is_temp_name(p.name)]


def _rows(folder):
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_checkpoint_write_fails_cleanly_and_the_run_resumes(capsys, tmp_path):
    folder = quick_run(capsys, tmp_path, epochs=1)
    cfg = json.loads((folder / "config.json").read_text())
    assert set_epochs(cfg["config"], 2) >= 1
    (folder / "config.json").write_text(json.dumps(cfg))
    last = folder / "checkpoints" / "last.safetensors"
    assert last.stat().st_size > LIMIT
    last_bytes, rows_before = last.read_bytes(), _rows(folder)

    done = subprocess.run([sys.executable, "-m", "learnloop.cli", "resume", str(folder)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=_limited())
    assert done.returncode == 1, done.stderr[-3000:]
    assert_ends_with_error_line(done.stderr, "cannot write", str(folder / "checkpoints"), "File too large",
                                "last checkpoint", f"learnloop resume {folder}")
    assert last.read_bytes() == last_bytes                          # the last good checkpoint, untouched
    assert load_state(last)["epoch"] == 1
    assert _temp_files(folder) == []                                # neither ours nor safetensors' .tmpXXXXXX
    rows_after = _rows(folder)                                      # every line still parses
    assert rows_after[:len(rows_before)] == rows_before

    done = subprocess.run([sys.executable, "-m", "learnloop.cli", "resume", str(folder)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((folder / "metrics.json").read_text())["status"] == "finished"
    epochs = [r["epoch"] for r in _rows(folder) if "train_loss" in r]
    assert epochs == [1, 2] and load_state(last)["epoch"] == 2


WRITERS = textwrap.dedent("""
    import json, sys
    import torch
    from pathlib import Path
    from learnloop.engine.checkpoint import save_state
    from learnloop.engine.run import RunFolder
    from learnloop.utils.io import write_json, write_text
    folder = Path(sys.argv[1])
    run = RunFolder(folder)
    results = {}
    for name, write in [
        ("ckpt.safetensors", lambda p: save_state(p, {"x": torch.zeros(100_000)})),
        ("big.json", lambda p: write_json(p, {"x": "y" * 100_000})),
        ("big.txt", lambda p: write_text(p, "z" * 100_000)),
        ("metrics.jsonl", lambda p: run.append_metrics({"epoch": 1, "note": "m" * 100_000})),
        ("log.txt", lambda p: run.log("l" * 100_000)),
    ]:
        try:
            write(folder / name)
            results[name] = None
        except OSError as e:
            results[name] = [type(e).__name__, e.errno, e.filename]
    print(json.dumps(results))
""")


def test_every_atomic_writer_reports_efbig_naming_the_destination(tmp_path):
    atomic = ("ckpt.safetensors", "big.json", "big.txt")
    for name in atomic:
        (tmp_path / name).write_bytes(b"previous")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n')
    done = subprocess.run([sys.executable, "-c", WRITERS, str(tmp_path)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=120, preexec_fn=_limited(20_000))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert sorted(results) == sorted([*atomic, "metrics.jsonl", "log.txt"])
    for name, got in results.items():
        assert got == ["OSError", errno.EFBIG, str(tmp_path / name)], (name, got)
    for name in atomic:
        assert (tmp_path / name).read_bytes() == b"previous"       # atomic writes: untouched
    assert _temp_files(tmp_path) == []
    rf = RunFolder(tmp_path)
    assert rf.history() == [{"epoch": 0}]                           # a cut append is skipped on reading...
    rf.append_metrics({"epoch": 1})
    assert rf.history() == [{"epoch": 0}, {"epoch": 1}]             # ...and does not swallow the next row


@pytest.mark.parametrize("exc, code, fragments", [
    (OSError(errno.ENOSPC, "No space left on device", "/r/checkpoints/last.safetensors"), 1,
     ["cannot write '/r/checkpoints/last.safetensors'", "No space left", "learnloop resume"]),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/r/metrics.json"), 1, ["Disk quota exceeded"]),
    (OSError(errno.EFBIG, "File too large", None), 1, ["cannot write: File too large"]),
    (PermissionError(errno.EACCES, "Permission denied", "/r/log.txt"), 2, ["'/r/log.txt': Permission denied"]),
    (OSError(errno.EROFS, "Read-only file system", "/r/x"), 2, ["Read-only file system"]),
])
def test_os_errors_map_to_one_line_and_a_code(exc, code, fragments):
    message, got = _os_error(exc)
    assert got == code and "\n" not in message
    for f in fragments:
        assert f in message, message


def test_an_os_error_in_the_run_folder_is_one_line_through_the_cli(capsys, tmp_path):
    folder = quick_run(capsys, tmp_path)
    (folder / "metrics.json").unlink()
    (folder / "metrics.json").mkdir()                    # the final write will fail with EISDIR
    code, _, err = run_cli(capsys, "resume", folder)
    assert code == 2, err
    assert_ends_with_error_line(err, str(folder / "metrics.json"), "Is a directory")


# --- leftovers of killed atomic writes -------------------------------------------------------------------
KILLED_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from learnloop.utils.io import atomic_path
    with atomic_path(Path(sys.argv[1]) / "metrics.json") as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_remove_stale_temp_files_removes_what_a_killed_write_left(tmp_path):
    run = RunFolder.create(tmp_path, "r", {"a": 1})
    (run.path / "metrics.json").write_text('{"status": "finished"}')
    done = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(run.path)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL
    (left,) = _temp_files(run.path)
    assert left.read_text() == "half" and (run.path / "metrics.json").read_text() == '{"status": "finished"}'
    assert run.remove_stale_temp_files() == [left]
    assert not left.exists() and _temp_files(run.path) == []


def test_remove_stale_temp_files_touches_nothing_else(tmp_path):
    run = RunFolder.create(tmp_path, "r", {"a": 1})
    stage = run.checkpoints / "stage"
    stage.mkdir()
    ours = [run.path / ".metrics.json.ab12cd34.tmp", stage / ".last.safetensors.zz_99x0a.tmp",
            run.checkpoints / ".tmpAb3dE9"]                          # the last: safetensors' own temp name
    keep = [run.path / "notes.tmp", run.path / ".hidden", run.path / "x.ab12cd34.tmp",
            run.path / ".metrics.json.AB12CD34.tmp", run.path / ".metrics.json.ab12cd3.tmp",
            run.checkpoints / ".tmpAb3dE", run.path / ".a.tmp", run.plots / "curves.png"]
    for p in ours + keep:
        p.write_text("x")
    (run.path / ".dir.ab12cd34.tmp").mkdir()                          # not a regular file
    target = tmp_path / "outside.txt"
    target.write_text("keep me")
    os.symlink(target, run.path / ".link.ab12cd34.tmp")               # a symlink: not ours to follow
    removed = run.remove_stale_temp_files()
    assert sorted(removed) == sorted(ours)
    assert all(not p.exists() for p in ours) and all(p.exists() for p in keep)
    assert (run.path / ".dir.ab12cd34.tmp").is_dir() and target.read_text() == "keep me"
    assert (run.path / ".link.ab12cd34.tmp").is_symlink()
