"""The `learnloop` command line: a thin layer over the Python API (`learnloop.recipes`).

Every error reaches one place, `main` (by way of `learnloop.cli.dispatch`), which prints exactly one line
on stderr (control characters in the message escaped) and picks the exit code:

    2    a user mistake: unknown recipe or key, wrong type, out-of-range value, bad path, corrupt file
    1    the machine: a full disk or file-size limit (ENOSPC, EDQUOT, EFBIG); the last checkpoint is intact
    3    training diverged; the last good checkpoint is intact
    130  Ctrl-C; the line names the run folder and the `learnloop resume` command that continues it

Arguments are checked before anything is created (seed range, device, epochs, recipe name, where the run
folder goes). `learnloop run` prints the run folder's path as its last stdout line.

This module holds the Typer app, the commands that train, evaluate and predict, and `main`; beside it:
checks.py (argument and path checks), interrupt.py (Ctrl-C), listing.py (`runs` and `compare`),
dispatch.py (exceptions to a line and an exit code), text.py (terminal-safe lines and tables) and
__main__.py (`python -m learnloop.cli`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

try:
    import typer

    from learnloop.cli.checks import _check_device, _check_out_folder, _open_run
    from learnloop.cli.dispatch import (
        DISK_FULL as DISK_FULL, PATH_PROBLEMS as PATH_PROBLEMS, SigintSeen, _dispatch, interruptible,
    )
    from learnloop.cli.dispatch import _os_error as _os_error           # tests import it from here
    from learnloop.cli.interrupt import _interrupted_run, _new_run_folder, _run_folders, _Stop
    from learnloop.cli.listing import compare, runs
    from learnloop.cli.text import _fmt, _table, one_line
    from learnloop.errors import UserError
except KeyboardInterrupt:           # Ctrl-C while the command line itself is loading: still 130 and a line
    print("learnloop: interrupted", file=sys.stderr)
    if sys.argv[:1] == ["-m"]:      # `python -m learnloop.cli` is loading this package (argv[0] is "-m" then)
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

    interruptible()

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

    interruptible()

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

    interruptible()

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

    interruptible()

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


@app.command("generate")
def generate(
    run_dir: Path = typer.Argument(..., help="a run folder of a generating recipe (e.g. text-to-image)"),
    prompt: str = typer.Argument(..., help="what to draw, e.g. \"a dark ankle boot\" (words the model knows)"),
    n: int = typer.Option(16, "--n", help="images in the grid (1..256)"),
    guidance: Optional[float] = typer.Option(None, help="classifier-free guidance scale (1: the conditional "
                                             "model, larger: closer to the prompt, less varied; default: the run's)"),
    seed: int = typer.Option(0, help="seed of the starting noise: the same seed gives the same grid"),
    checkpoint: str = typer.Option("best", help="best or last"),
    out: Optional[Path] = typer.Option(None, help="PNG file to write (default: the run's samples/ folder)"),
):
    """Draw a grid of images for a prompt; prints one JSON line with the PNG's path."""
    from learnloop.recipes import generate_run
    from learnloop.utils.io import dumps_strict

    interruptible()

    _open_run(run_dir)
    try:
        result = generate_run(run_dir, prompt, n=n, seed=seed, guidance=guidance, which=checkpoint, out=out)
    except KeyboardInterrupt:
        raise _Stop("interrupted; nothing was generated", 130) from None
    typer.echo(dumps_strict(result)[0])


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

    interruptible()

    get_recipe(recipe)
    _check_out_folder(out)
    try:
        result, path = lr_find_recipe(recipe, set=set_, steps=steps, out=out)
    except KeyboardInterrupt:
        raise _Stop("interrupted; no plot was written (lr-find keeps no state: run it again)", 130) from None
    typer.echo(f"suggested lr: {result.suggestion:.3g} (steepest descent); loss minimum at {result.min_loss_lr:.3g}",
               err=True)
    typer.echo(str(path))


app.command("runs")(runs)               # listing.py: tables of run folders
app.command("compare")(compare)


# --- the entry point -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Entry point: turns every error into one line and an exit code instead of a traceback."""
    sigint = None
    if argv is None:                    # a real process (not a test calling main(args)): watch for Ctrl-C
        sigint = SigintSeen()
        signal.signal(signal.SIGINT, sigint)
    code = _dispatch(app, argv, sigint)
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
