"""The `learnloop` command line: a thin layer over the Python API (`learnloop.recipes`).

Every error reaches one place, `main`, which prints exactly one line on stderr (control characters in
the message escaped) and picks the exit code:

    2    a user mistake: unknown recipe or key, wrong type, out-of-range value, bad path, corrupt file
    1    the machine: a full disk or file-size limit (ENOSPC, EDQUOT, EFBIG); the last checkpoint is intact
    3    training diverged; the last good checkpoint is intact
    130  Ctrl-C; the line names the run folder and the `learnloop resume` command that continues it

Arguments are checked before anything is created (seed range, device, epochs, recipe name, where the run
folder goes). `learnloop run` prints the run folder's path as its last stdout line.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import time
import unicodedata
from pathlib import Path
from typing import List, Optional

try:
    import typer

    from learnloop.errors import TrainingDiverged, UserError
except KeyboardInterrupt:           # Ctrl-C while the command line itself is loading: still 130 and a line
    print("learnloop: interrupted", file=sys.stderr)
    if __name__ == "__main__":
        sys.stderr.flush()
        os._exit(130)               # see main(): why not sys.exit
    raise SystemExit(130) from None

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
    help="Learning Loop: classic deep-learning techniques, implemented readably, trained on real data and "
         "checked against references.\n\nStart with `learnloop run` (the quickstart), `learnloop list` "
         "(all recipes) and `learnloop show RECIPE` (its settings).")

SET_HELP = "override a config field, e.g. --set train.optim.lr=3e-3 (every key: `learnloop show RECIPE`)"
MAX_SEED = 2 ** 63 - 1
MAX_EPOCHS = 100_000
LR_FIND_STEPS = (10, 10_000)
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
PATH_PROBLEMS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                 errno.ELOOP, errno.ENOENT, errno.EEXIST)
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


class _Stop(Exception):
    """Raised by a command to end with `message` (one line) and exit `code` (Ctrl-C handling)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# --- messages --------------------------------------------------------------------------------------------
def one_line(text) -> str:
    """`text` as a single terminal-safe line: newlines, other control characters (ANSI escapes included),
    Unicode line separators and bidi overrides become visible escapes such as \\n or \\x1b."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp") or code in _BIDI:
            out.append({"\n": "\\n", "\r": "\\r"}.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(ch)
    return "".join(out)


def _q(value) -> str:
    """A user value quoted for a message (escaping happens when the message is printed)."""
    return f"'{value}'"


def _say(message: str) -> None:
    print(f"learnloop: {one_line(message)}", file=sys.stderr, flush=True)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return one_line(v)


def _table(rows: list[list[str]], header: list[str]) -> str:
    rows = [[one_line(x) for x in r] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in out)


# --- argument checks (before anything is created) --------------------------------------------------------
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


# --- Ctrl-C ----------------------------------------------------------------------------------------------
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


# --- commands --------------------------------------------------------------------------------------------
@app.command("list")
def list_recipes():
    """List the recipes with a one-line description and the target each one reaches."""
    from learnloop.recipes import recipes

    by_family: dict[str, list] = {}
    for r in recipes().values():
        by_family.setdefault(r.family, []).append(r)
    for family, rs in sorted(by_family.items()):
        typer.echo(f"\n[{family}]")
        for r in sorted(rs, key=lambda r: r.name):
            typer.echo(f"  {r.name:<24} {r.summary}")
            if r.target:
                typer.echo(f"  {'':<24} target: {r.target}")


@app.command("show")
def show(recipe: str = typer.Argument(..., help="recipe name (see `learnloop list`)")):
    """Show a recipe's settings: every key `--set` accepts, its type, default and meaning."""
    from learnloop.recipes import get_recipe
    from learnloop.recipes.config import describe

    r = get_recipe(recipe)
    typer.echo(f"{r.name}: {r.summary}")
    if r.target:
        typer.echo(f"target: {r.target}   (measured by: {r.benchmark})")
    typer.echo("")
    typer.echo(_table([list(row) for row in describe(r.config())], ["key", "type", "default", "meaning"]))


@app.command("run")
def run(
    recipe: Optional[str] = typer.Argument(None, help="recipe name (see `learnloop list`); none: the quickstart"),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    seed: int = typer.Option(0, min=0, max=MAX_SEED,
                             help="random seed in [0, 2**63-1]; the same seed reproduces the same metrics on CPU"),
    out: Path = typer.Option(Path("runs"), help="root folder for run folders"),
    epochs: Optional[int] = typer.Option(None, help=f"training epochs, 1..{MAX_EPOCHS} (shortcut for the recipe's epochs setting)"),
    track: Optional[str] = typer.Option(None, help="also log to 'tensorboard' (needs learnloop[track])"),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:N or mps"),
):
    """Train and evaluate a recipe; prints progress, then the run folder's path as the last line."""
    from learnloop.recipes import get_recipe, run_recipe

    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    if epochs is not None and epochs > MAX_EPOCHS:
        raise UserError(f"--epochs must be <= {MAX_EPOCHS}, got {epochs}")
    if recipe is not None:
        get_recipe(recipe)              # "" or a typo: one line before anything is made (None: the quickstart)
    device = _check_device(device)
    _check_out_folder(out)
    before, started = _run_folders(out), time.time()
    try:
        result = run_recipe(recipe, set=set_, seed=seed, out=out, epochs=epochs, track=track, device=device)
    except KeyboardInterrupt as e:
        raise _interrupted_run(getattr(e, "folder", None) or _new_run_folder(out, before), started) from None
    _print_metrics(result.metrics)
    typer.echo(str(result.folder))


def _print_metrics(metrics: dict) -> None:
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k, v in shown.items():
        typer.echo(f"  {one_line(k):<36} {_fmt(v)}", err=True)


@app.command("resume")
def resume(run_dir: Path = typer.Argument(..., help="a run folder (runs/<recipe>/<id>)")):
    """Continue a stopped or interrupted run exactly where its last checkpoint left off."""
    from learnloop.recipes import resume_run

    run = _open_run(run_dir)
    _check_device(run.config().get("device", "cpu"))
    started = time.time()
    try:
        result = resume_run(run_dir)
    except KeyboardInterrupt:
        raise _interrupted_run(run_dir, started) from None
    _print_metrics(result.metrics)
    typer.echo(str(result.folder))


@app.command("eval")
def evaluate(run_dir: Path = typer.Argument(..., help="a run folder")):
    """Re-evaluate a run's best checkpoint with the recipe's full metric set (writes eval.json)."""
    from learnloop.recipes import evaluate_run

    _open_run(run_dir)
    try:
        metrics = evaluate_run(run_dir)
    except KeyboardInterrupt:
        raise _Stop(f"interrupted; eval.json was not written; run `learnloop eval {run_dir}` again", 130) from None
    _print_metrics(metrics)
    typer.echo(str(Path(run_dir) / "eval.json"))


@app.command("predict")
def predict(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    inputs: List[str] = typer.Argument(None, help="what the recipe's predictor takes: image files, texts, seeds..."),
    checkpoint: str = typer.Option("best", help="best or last"),
):
    """Apply a trained run to your own inputs; prints one JSON line per input (`learnloop predict RUN` alone
    says what the run's predictor expects)."""
    from learnloop.recipes import load_run, predict_run

    _open_run(run_dir)
    if not inputs:
        run = load_run(run_dir, checkpoint)
        predictor = run.recipe.parts.predictor(run)
        if predictor is None:
            raise UserError(f"recipe '{run.recipe.name}' has no predictor (it makes no predictions from user input)")
        raise UserError(f"predict needs inputs: {predictor.inputs}")
    try:
        outputs = predict_run(run_dir, list(inputs), which=checkpoint)
    except KeyboardInterrupt:
        raise _Stop("interrupted; nothing was predicted", 130) from None
    from learnloop.utils.io import dumps_strict

    for out in outputs:
        typer.echo(dumps_strict(out)[0])


@app.command("lr-find")
def lr_find(
    recipe: str = typer.Argument(..., help="a supervised recipe, e.g. mlp-fashion"),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    steps: int = typer.Option(100, min=LR_FIND_STEPS[0], max=LR_FIND_STEPS[1],
                              help=f"number of learning rates tried ({LR_FIND_STEPS[0]}..{LR_FIND_STEPS[1]})"),
    out: Path = typer.Option(Path("runs"), help="where the plot goes (<out>/<recipe>/lr_find-*.png)"),
):
    """Learning-rate range test: sweep the rate geometrically, plot the loss, suggest a value."""
    from learnloop.recipes import get_recipe, lr_find_recipe

    get_recipe(recipe)
    _check_out_folder(out)
    try:
        result, path = lr_find_recipe(recipe, set=set_, steps=steps, out=out)
    except KeyboardInterrupt:
        raise _Stop("interrupted; no plot was written (lr-find keeps no state: run it again)", 130) from None
    typer.echo(f"suggested lr: {result.suggestion:.3g} (steepest descent); loss minimum at {result.min_loss_lr:.3g}",
               err=True)
    typer.echo(str(path))


def _load_metrics(run) -> dict:
    """Final metrics of an opened run folder: metrics.json, then eval.json on top (both schema-checked)."""
    return {**run.metrics(), **run.eval_metrics()}


def _short_reason(e: Exception) -> str:
    """'metrics.json: not valid JSON (...)': the file's name and what is wrong with it, short."""
    reason = getattr(e, "reason", None) or (e.strerror if isinstance(e, OSError) and e.strerror else str(e))
    path = getattr(e, "path", None) or getattr(e, "filename", None)
    if path is not None and getattr(e, "reason", None) != str(e):
        reason = f"{Path(path).name}: {reason}"
    reason = one_line(reason)
    return reason if len(reason) <= 90 else reason[:87] + "..."


@app.command("runs")
def runs(root: Path = typer.Option(Path("runs"), help="root folder of run folders")):
    """Table of all runs under ROOT: recipe, folder, status, main metric. A run whose files cannot be read
    is listed as unreadable, with the reason."""
    from learnloop.engine.run import RunFolder
    from learnloop.recipes import recipes

    _check_path_text(root, "--root")
    if not root.is_dir():
        raise UserError(f"{_q(root)}: no such folder (runs are written to ./runs by default)")
    known = recipes()
    rows = []
    for cfg in sorted(root.glob("*/*/config.json")):
        folder = cfg.parent
        name = folder.parent.name
        try:
            run = RunFolder.open(folder)
            run.config()
            metrics = _load_metrics(run)
        except (UserError, OSError) as e:
            rows.append([name, folder.name, "unreadable", "", "", _short_reason(e)])
            continue
        main = known[name].main_metric if name in known else ""
        value = metrics.get(main, "") if main else ""
        rows.append([name, folder.name, metrics.get("status", "unfinished"),
                     f"{main}={_fmt(value)}" if main and value != "" else "",
                     _fmt(metrics.get("wall_time_s", "")), ""])
    if not rows:
        typer.echo(f"no runs under {one_line(root)}")
        return
    if not any(r[-1] for r in rows):
        rows = [r[:-1] for r in rows]
    typer.echo(_table(rows, ["recipe", "run", "status", "main metric", "seconds", "problem"][:len(rows[0])]))


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@app.command("compare")
def compare(
    run_dirs: List[Path] = typer.Argument(..., help="two or more run folders"),
    plot: Optional[Path] = typer.Option(None, help="also write a PNG of their validation curves here"),
):
    """Show several runs' final metrics side by side (and optionally their curves in one plot). A run
    whose files cannot be read is left out, with the reason."""
    from learnloop.engine.run import RunFolder

    folders = [_existing(d) for d in run_dirs]
    if plot is not None:
        _check_plot_file(plot)
    good, bad = [], []
    for d in folders:
        r = d.resolve()
        name = f"{r.parent.name}/{r.name}"
        try:
            run = RunFolder.open(d)
            run.config()
            good.append((name, run, _load_metrics(run)))
        except (UserError, OSError) as e:
            bad.append((name, _short_reason(e)))
    if not good:
        raise UserError(f"none of these runs can be read ({bad[0][0]}: {bad[0][1]})")
    keys = sorted({k for _, _, m in good for k, v in m.items() if isinstance(v, (int, float)) or v is None}
                  - {"status", "error"})
    rows = [[k, *[_fmt(m.get(k, "-")) for _, _, m in good]] for k in keys]
    typer.echo(_table(rows, ["metric", *[one_line(n) for n, _, _ in good]]))
    for name, reason in bad:
        typer.echo(f"not compared: {one_line(name)}: {reason}")
    if plot is not None:
        from learnloop.utils.plots import plot_lines

        series = {}
        for name, run, _ in good:
            hist = [r for r in run.history() if _finite_number(r.get("val_loss")) and _finite_number(r.get("epoch"))]
            if hist:
                series[name] = ([r["epoch"] for r in hist], [r["val_loss"] for r in hist])
        if not series:
            raise UserError("none of these runs logged val_loss per epoch; nothing to plot")
        plot_lines(series, plot, "epoch", "validation loss", "runs compared")
        typer.echo(str(plot))


# --- the one place errors are printed --------------------------------------------------------------------
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


def _caused_by_interrupt(e: BaseException) -> bool:
    """True when a Ctrl-C is what raised `e` (CPython wraps a KeyboardInterrupt raised in some hooks)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _dispatch(argv: list[str] | None) -> int:
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
        if _caused_by_interrupt(e):     # Ctrl-C inside class creation surfaces as RuntimeError from __set_name__
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
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: turns every error into one line and an exit code instead of a traceback."""
    code = _dispatch(argv)
    if argv is None:
        if code == 130:
            # A Ctrl-C raised inside exec()'d code (dataclass and namedtuple creation run through exec) leaves
            # CPython's "unhandled KeyboardInterrupt" flag set even though it was handled here, and a process
            # started with `python -m` then ends by re-raising SIGINT (exit status -2) instead of exiting 130.
            # Nothing is left to finish (every file was written atomically), so leave without finalization.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(130)
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
