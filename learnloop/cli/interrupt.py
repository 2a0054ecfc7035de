"""Ctrl-C in the command line: the run folder an interrupted `learnloop run` made (found by comparing the
folders under `--out` before and after), the line naming it with the `learnloop resume` command, and
`_Stop`, which a command raises to end with such a line and exit code 130."""

from __future__ import annotations

from pathlib import Path

from learnloop.cli.text import _q


class _Stop(Exception):
    """Raised by a command to end with `message` (one line) and exit `code` (Ctrl-C handling)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _run_folders(out: Path) -> set[Path]:
    """The <recipe>/<id> folders under `out` now."""
    try:
        return {p for p in out.glob("*/*") if p.is_dir()}
    except OSError:
        return set()


def _new_run_folder(out: Path, before: set[Path]) -> Path | None:
    """The run folder this command made (None if it made none, or if another process made one too)."""
    new = [p for p in _run_folders(out) - before if (p / "config.json").exists()]
    return new[0] if len(new) == 1 else None


def _interrupted_run(folder: Path | None, started: float) -> _Stop:
    from learnloop.engine.run import RunFolder

    if folder is None:
        return _Stop("interrupted before the run folder was made; nothing to resume (run the command again)", 130)
    RunFolder(folder).mark_interrupted(started)
    return _Stop(f"interrupted; run folder {_q(folder)} keeps its last checkpoint; continue with: "
                 f"learnloop resume {folder}", 130)


def _caused_by_interrupt(e: BaseException) -> bool:
    """True when a Ctrl-C is what raised `e` (CPython wraps a KeyboardInterrupt raised in some hooks)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
