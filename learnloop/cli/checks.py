"""Argument and path checks of the command line, made before anything is created: control characters
in a path, where a run folder may go (`--out`), the `--plot` file, an existing run folder, the device.
Each failure is a one-line `UserError` naming the option and the value."""

from __future__ import annotations

import os
from pathlib import Path

from learnloop.cli.text import _q, one_line
from learnloop.errors import UserError


def _check_path_text(path: Path, what: str) -> Path:
    if one_line(path) != str(path):
        raise UserError(f"{what} {_q(path)}: contains a control character (a newline?)")
    if str(path) == "":
        raise UserError(f"{what}: empty path")
    return path


def _first_existing(path: Path) -> Path:
    p = path.absolute()
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path, what: str, shown: Path) -> None:
    """Create and remove an empty file in `folder`: the one test that holds for root, read-only mounts
    and pseudo file systems alike."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".learnloop-probe-", dir=folder)
    except OSError as e:
        raise UserError(f"{what} {_q(shown)}: cannot write in {_q(folder)} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _check_out_folder(path: Path, what: str = "--out") -> Path:
    """A folder that exists or can be made, where we may write; nothing is created."""
    _check_path_text(path, what)
    base = _first_existing(path)
    if not base.is_dir():
        raise UserError(f"{what} {_q(path)}: {_q(base)} is not a folder")
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    longest = max(path.parts, key=lambda p: len(os.fsencode(p)), default="")
    if len(os.fsencode(longest)) > name_max:
        raise UserError(f"{what} {_q(path)}: the name {_q(longest[:40] + '...')} is too long for this file system")
    _probe_writable(base, what, path)
    return path


def _check_plot_file(path: Path) -> Path:
    _check_path_text(path, "--plot")
    if path.is_dir():
        raise UserError(f"--plot {_q(path)}: is a folder; give a file name such as {_q(path / 'curves.png')}")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UserError(f"--plot {_q(path)}: folder {_q(parent)} does not exist")
    if os.path.lexists(path) and not path.is_file():
        raise UserError(f"--plot {_q(path)}: exists and is not a regular file")
    _probe_writable(parent, "--plot", path)
    return path


def _check_device(device: str) -> str:
    from learnloop.engine.schema import check_device

    return check_device(device, "--device")


def _existing(path: Path) -> Path:
    _check_path_text(path, "run folder")
    if not os.path.lexists(path):
        raise UserError(f"{_q(path)}: no such file or folder")
    return path


def _open_run(path: Path):
    from learnloop.engine.run import RunFolder

    run = RunFolder.open(_existing(path))
    run.config()                        # schema check: a corrupt config.json is one line, before any work
    return run
