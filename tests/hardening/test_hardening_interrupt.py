"""Failure class 1: Ctrl-C. A real SIGINT sent to a child `learnloop` process must end it with exit code 130
and one line saying it was interrupted (naming the run folder and the resume command when there is one),
and `learnloop resume` must then finish the run from its last checkpoint."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardening_helpers import QUICK, REPO, child_env, cli_child, default_sigint, quick_run, set_epochs


def _wait_for(predicate, timeout=120.0, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def _interrupt(proc, after_s=0.0) -> tuple[int, str, str]:
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _last_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    return lines[-1]


def test_run_interrupted_exits_130_names_the_folder_and_resume_finishes_it(tmp_path):
    epochs = 40
    proc = cli_child("run", QUICK, "--out", tmp_path, "--epochs", epochs)
    root = tmp_path / QUICK
    assert _wait_for(lambda: any(root.glob("*/checkpoints/last.safetensors")), proc=proc), proc.communicate()
    code, out, err = _interrupt(proc)
    folder = next(root.iterdir())
    assert code == 130, err
    line = _last_line(err)
    assert line.startswith("learnloop: interrupted"), line
    assert str(folder) in line and f"learnloop resume {folder}" in line, line
    assert "Traceback" not in err
    assert out.strip() == ""                                  # the folder is printed only on success
    assert json.loads((folder / "metrics.json").read_text())["status"] == "interrupted"
    assert "interrupted" in (folder / "log.txt").read_text()

    done = subprocess.run([sys.executable, "-m", "learnloop.cli", "resume", str(folder)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip().splitlines()[-1]) == folder
    assert json.loads((folder / "metrics.json").read_text())["status"] == "finished"
    rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    epochs_logged = [r["epoch"] for r in rows if "train_loss" in r and float(r["epoch"]).is_integer()]
    assert epochs_logged == list(range(1, epochs + 1))        # continued, not restarted: each epoch once


@pytest.mark.parametrize("after_s", [0.2, 0.5, 1.0, 2.0])
def test_interrupt_soon_after_start_is_130_with_a_message(tmp_path, after_s):
    """Wherever the signal lands (loading the command line, imports, dataclass creation, config, data), the
    exit code is 130 and the line says so (not a traceback, not death by SIGINT: exit status -2)."""
    proc = cli_child("run", QUICK, "--out", tmp_path, "--epochs", 40)
    code, out, err = _interrupt(proc, after_s=after_s)
    assert code == 130, err
    assert _last_line(err).startswith("learnloop: interrupted"), err
    assert "Traceback" not in err


def test_lr_find_interrupted_exits_130(tmp_path):
    proc = cli_child("lr-find", QUICK, "--steps", 10000, "--out", tmp_path)
    code, out, err = _interrupt(proc, after_s=3.0)
    assert code == 130, err
    line = _last_line(err)
    assert line.startswith("learnloop: interrupted"), line
    assert "Traceback" not in err and out.strip() == ""
    assert not list(tmp_path.rglob("*.png"))


def test_eval_interrupted_exits_130_and_writes_no_eval_json(tmp_path, capsys):
    folder = quick_run(capsys, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "learnloop.cli", "eval", str(folder)], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    code, out, err = _interrupt(proc, after_s=0.6)
    if code == 0:                      # finished before the signal arrived (a very fast machine): nothing to test
        assert (folder / "eval.json").is_file()
        return
    assert code == 130, err
    assert _last_line(err).startswith("learnloop: interrupted"), err
    assert "Traceback" not in err
    assert not (folder / "eval.json").exists()


def test_resume_interrupted_exits_130_and_resumes_again(tmp_path, capsys):
    folder = quick_run(capsys, tmp_path, epochs=1)
    cfg = json.loads((folder / "config.json").read_text())
    assert set_epochs(cfg["config"], 40) >= 1
    (folder / "config.json").write_text(json.dumps(cfg))
    log = folder / "metrics.jsonl"
    proc = cli_child("resume", folder)
    assert _wait_for(lambda: len(log.read_text().splitlines()) >= 3, proc=proc), proc.communicate()
    code, out, err = _interrupt(proc)
    assert code == 130, err
    line = _last_line(err)
    assert line.startswith("learnloop: interrupted") and f"learnloop resume {folder}" in line, line
    assert json.loads((folder / "metrics.json").read_text())["status"] == "interrupted"
    done = subprocess.run([sys.executable, "-m", "learnloop.cli", "resume", str(folder)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["epoch"] for r in rows if "train_loss" in r] == list(range(1, 41))
