"""Shared pieces of the hardening tests: the CLI in-process and as a child process, run folders made by a
real `learnloop run` of the quickstart, and ways to damage their files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

import learnloop
from learnloop.cli import main

REPO = Path(learnloop.__file__).absolute().parent.parent      # children import the package under test
QUICK = "mlp-digits"


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *fragments: str, prefix: str = "learnloop: error:") -> str:
    """stderr is exactly one line (no traceback), starting with `prefix` and holding every fragment."""
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    line = err[:-1]
    assert line.startswith(prefix), line
    assert "Traceback" not in err and "\x1b" not in err and "\r" not in err, err
    for f in fragments:
        assert f in line, (f, line)
    return line


def assert_ends_with_error_line(err: str, *fragments: str, prefix: str = "learnloop: error:") -> str:
    """Progress lines may come first; the error is the last line, the only `learnloop:` one, no traceback."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines and sum(x.startswith("learnloop:") for x in lines) == 1, err
    return assert_one_error_line(lines[-1] + "\n", *fragments, prefix=prefix)


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "LEARNLOOP_TEST_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def default_sigint():
    """preexec_fn: Ctrl-C acts in the child even when the test runner was started with SIGINT ignored
    (a background job of a non-interactive shell)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_child(*args, preexec_fn=default_sigint, **kwargs) -> subprocess.Popen:
    """`python -m learnloop.cli ARGS` in a child process, with the package of this tree."""
    return subprocess.Popen([sys.executable, "-m", "learnloop.cli", *map(str, args)], cwd=REPO, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
                            **kwargs)


def quick_run(capsys, out: Path, epochs: int = 1) -> Path:
    """A finished quickstart run folder (a real `learnloop run`, ~2 s)."""
    code, stdout, err = run_cli(capsys, "run", QUICK, "--out", out, "--epochs", epochs)
    assert code == 0, err
    return Path(stdout.strip().splitlines()[-1])


def copy_run(src: Path, dst_root: Path) -> Path:
    """A copy of run folder `src` under dst_root/<recipe>/<id> (so `runs --root dst_root` lists it)."""
    dst = dst_root / src.parent.name / src.name
    shutil.copytree(src, dst, symlinks=True)
    return dst


def set_epochs(config: dict, epochs: int) -> int:
    """Set every `epochs` field of a resolved config (flat or nested sections); returns how many."""
    n = 0
    for k, v in config.items():
        if k == "epochs" and isinstance(v, int):
            config[k] = epochs
            n += 1
        elif isinstance(v, dict):
            n += set_epochs(v, epochs)
    return n


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    result = fn(data)
    path.write_text(json.dumps(data if result is None else result))


def read_tree(path: Path) -> tuple[dict, dict]:
    """(tensors, JSON tree) of a learnloop checkpoint, read directly with safetensors."""
    with safe_open(str(path), "pt") as f:
        tree = json.loads(f.metadata()["learnloop_tree"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, tree


def write_tree(path: Path, tensors: dict, tree, raw_tree: str | None = None) -> None:
    """Write a checkpoint with a given tree (or raw metadata text), bypassing learnloop's writer."""
    save_file(tensors, str(path), metadata={"learnloop_tree": raw_tree if raw_tree is not None else json.dumps(tree)})


def state_files(folder: Path) -> dict[str, bytes]:
    """Every regular file of a run folder and its bytes (to show a failed command changed nothing)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
