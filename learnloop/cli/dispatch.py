"""The one place the command line's errors are printed: `_dispatch` runs the Typer app and turns every
exception into one line on stderr (`learnloop: ...`, control characters escaped) and an exit code (the
table is in `learnloop.cli`'s docstring). An `OSError` is sorted by its errno: a full disk or file-size
limit is the machine (1, naming the run folder to resume), a bad path is the user (2)."""

from __future__ import annotations

import errno
import signal
import sys
from pathlib import Path

from learnloop.cli.interrupt import _caused_by_interrupt, _Stop
from learnloop.cli.text import _q, _say
from learnloop.errors import TrainingDiverged, UserError

DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
PATH_PROBLEMS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                 errno.ELOOP, errno.ENOENT, errno.EEXIST)


def _run_folder_of(filename) -> Path | None:
    """The run folder holding `filename` (checkpoints/<stage>/last.safetensors is 3 levels down), if any."""
    for p in list(Path(filename).parents)[:4]:
        if (p / "config.json").is_file() and (p / "checkpoints").is_dir():
            return p
    return None


def _os_error(e: OSError) -> tuple[str, int]:
    where = f" {_q(e.filename)}" if e.filename is not None else ""
    what = e.strerror or type(e).__name__
    if e.errno in DISK_FULL:
        run = _run_folder_of(e.filename) if e.filename is not None else None
        return (f"error: cannot write{where}: {what} (disk full or file-size limit); the files written before "
                f"are intact (the last checkpoint too): free some space, then `learnloop resume "
                f"{run if run is not None else 'RUN_DIR'}`", 1)
    if e.errno in PATH_PROBLEMS or isinstance(e, PermissionError):
        return f"error:{where}: {what}" if where else f"error: {what}", 2
    return f"error:{where}: {what}" if where else f"error: {what}", 1


class SigintSeen:
    """The command line's SIGINT handler. Until a command calls `interruptible()` (once its heavy imports are
    done) it only remembers the Ctrl-C: raising KeyboardInterrupt inside torch's C++ start-up either aborts
    the process (a pybind11 callback cannot carry it: "terminate called", exit -6) or is dropped there (torch
    imports NumPy from C++ and swallows the error, so the command would run to its end). From then on it
    raises KeyboardInterrupt at once, as Python's own handler does; `_dispatch` maps a Ctrl-C that never
    surfaced to exit code 130 too."""

    installed: "SigintSeen | None" = None       # the handler `main` installed in this process

    def __init__(self):
        self.seen, self.deferred = False, True
        SigintSeen.installed = self

    def __call__(self, signum, frame):
        self.seen = True
        if not self.deferred:
            signal.default_int_handler(signum, frame)


def interruptible() -> None:
    """Commands call this after their heavy imports: a Ctrl-C that came during them raises now, later ones at
    once (no-op without an installed handler, as when tests call `main(argv)`)."""
    handler = SigintSeen.installed
    if handler is None:
        return
    handler.deferred = False
    if handler.seen:
        raise KeyboardInterrupt


def _dispatch(app, argv: list[str] | None, sigint: SigintSeen | None = None) -> int:
    """Run the Typer `app` on `argv` (None: sys.argv); return the exit code, having printed the error line."""
    try:
        rv = app(args=argv, prog_name="learnloop", standalone_mode=False)
    except _Stop as e:
        _say(str(e))
        return e.code
    except UserError as e:
        _say(f"error: {e}")
        return 2
    except TrainingDiverged as e:
        _say(f"training diverged: {e}")
        return 3
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except OSError as e:
        if e.errno is None or (e.filename is None and e.errno not in DISK_FULL):
            raise
        message, code = _os_error(e)
        _say(message)
        return code
    except Exception as e:
        if _caused_by_interrupt(e) or (sigint is not None and sigint.seen):
            # Ctrl-C inside class creation surfaces as RuntimeError from __set_name__, inside an import as
            # whatever the half-imported module then raises
            _say("interrupted")
            return 130
        # typer's (click's) own signals: usage errors carry format_message(), Exit/Abort carry exit codes.
        # typer >= 0.20 vendors click, so they are recognised by shape rather than by class.
        name = type(e).__name__
        if name == "Abort":
            _say("interrupted")
            return 130
        if name == "Exit" and hasattr(e, "exit_code"):
            return e.exit_code
        if name == "NoArgsIsHelpError" and hasattr(e, "format_message"):
            print(e.format_message(), file=sys.stderr)          # help text, not an error: keep its lines
            return 2
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            _say(f"error: {e.format_message()}")
            return 2 if e.exit_code in (1, 2) else e.exit_code
        raise
    # With standalone_mode=False typer returns, rather than raises, the code of an Exit: Ctrl-C outside a
    # command's own handling arrives here as 130. Commands themselves return None.
    if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
        if rv == 130:
            _say("interrupted")
        return rv
    if sigint is not None and sigint.seen:      # a Ctrl-C during a command that never became interruptible
        _say("interrupted")
        return 130
    return 0
