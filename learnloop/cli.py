"""The `learnloop` command line: a thin layer over the Python API (`learnloop.recipes`).

Every user mistake (unknown recipe or key, wrong type, out-of-range value, missing path, corrupt file)
prints one line on stderr and exits with code 2; a diverged training exits 3; Ctrl-C exits 130 and
leaves the last checkpoint intact.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer

from learnloop.errors import TrainingDiverged, UserError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
    help="Learning Loop: classic deep-learning techniques, implemented readably, trained on real data and "
         "checked against references.\n\nStart with `learnloop run` (the quickstart), `learnloop list` "
         "(all recipes) and `learnloop show RECIPE` (its settings).")

SET_HELP = "override a config field, e.g. --set lr=3e-3 --set hidden=512,256 (see `learnloop show RECIPE`)"


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in out)


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
    seed: int = typer.Option(0, help="random seed; the same seed reproduces the same metrics on CPU"),
    out: Path = typer.Option(Path("runs"), help="root folder for run folders"),
    epochs: Optional[int] = typer.Option(None, help="shortcut for --set epochs=N"),
    track: Optional[str] = typer.Option(None, help="also log to 'tensorboard' (needs learnloop[track])"),
    device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda"),
):
    """Train and evaluate a recipe; prints progress, then the run folder's path as the last line."""
    from learnloop.recipes import run_recipe

    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}")
    result = run_recipe(recipe, set=set_, seed=seed, out=out, epochs=epochs, track=track, device=device)
    _print_metrics(result.metrics)
    typer.echo(str(result.folder))


def _print_metrics(metrics: dict) -> None:
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k, v in shown.items():
        typer.echo(f"  {k:<36} {_fmt(v)}", err=True)


@app.command("resume")
def resume(run_dir: Path = typer.Argument(..., help="a run folder (runs/<recipe>/<id>)")):
    """Continue a stopped or interrupted run exactly where its last checkpoint left off."""
    from learnloop.recipes import resume_run

    result = resume_run(_existing(run_dir))
    _print_metrics(result.metrics)
    typer.echo(str(result.folder))


@app.command("eval")
def evaluate(run_dir: Path = typer.Argument(..., help="a run folder")):
    """Re-evaluate a run's best checkpoint with the recipe's full metric set (writes eval.json)."""
    from learnloop.recipes import evaluate_run

    metrics = evaluate_run(_existing(run_dir))
    _print_metrics(metrics)
    typer.echo(str(Path(run_dir) / "eval.json"))


@app.command("lr-find")
def lr_find(
    recipe: str = typer.Argument(..., help="a supervised recipe, e.g. mlp-fashion"),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    steps: int = typer.Option(100, min=10, help="number of learning rates tried"),
    out: Path = typer.Option(Path("runs"), help="where the plot goes (<out>/<recipe>/lr_find-*.png)"),
):
    """Learning-rate range test: sweep the rate geometrically, plot the loss, suggest a value."""
    from learnloop.recipes import lr_find_recipe

    result, path = lr_find_recipe(recipe, set=set_, steps=steps, out=out)
    typer.echo(f"suggested lr: {result.suggestion:.3g} (steepest descent); loss minimum at {result.min_loss_lr:.3g}",
               err=True)
    typer.echo(str(path))


def _existing(path: Path) -> Path:
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    return path


def _load_metrics(run_dir: Path) -> dict:
    from learnloop.engine.run import RunFolder

    run = RunFolder.open(run_dir)
    metrics = run.metrics()
    if (run.path / "eval.json").is_file():
        metrics = {**metrics, **json.loads((run.path / "eval.json").read_text())}
    return metrics


@app.command("runs")
def runs(root: Path = typer.Option(Path("runs"), help="root folder of run folders")):
    """Table of all runs under ROOT: recipe, folder, status, main metric."""
    from learnloop.recipes import recipes

    if not root.is_dir():
        raise UserError(f"{root}: no such folder (runs are written to ./runs by default)")
    known = recipes()
    rows = []
    for cfg in sorted(root.glob("*/*/config.json")):
        folder = cfg.parent
        metrics = _load_metrics(folder)
        name = folder.parent.name
        main = known[name].main_metric if name in known else ""
        value = metrics.get(main, "") if main else ""
        rows.append([name, folder.name, metrics.get("status", "unfinished"),
                     f"{main}={_fmt(value)}" if main and value != "" else "", _fmt(metrics.get("wall_time_s", ""))])
    if not rows:
        typer.echo(f"no runs under {root}")
        return
    typer.echo(_table(rows, ["recipe", "run", "status", "main metric", "seconds"]))


@app.command("compare")
def compare(
    run_dirs: List[Path] = typer.Argument(..., help="two or more run folders"),
    plot: Optional[Path] = typer.Option(None, help="also write a PNG of their validation curves here"),
):
    """Show several runs' final metrics side by side (and optionally their curves in one plot)."""
    from learnloop.engine.run import RunFolder

    folders = [_existing(d) for d in run_dirs]
    all_metrics = [_load_metrics(d) for d in folders]
    keys = sorted({k for m in all_metrics for k, v in m.items() if isinstance(v, (int, float))})
    names = [f"{d.parent.name}/{d.name}" for d in folders]
    rows = [[k, *[_fmt(m.get(k, "-")) for m in all_metrics]] for k in keys]
    typer.echo(_table(rows, ["metric", *names]))
    if plot is not None:
        from learnloop.utils.plots import plot_lines

        series = {}
        for name, d in zip(names, folders):
            hist = [r for r in RunFolder.open(d).history() if "val_loss" in r]
            if hist:
                series[name] = ([r["epoch"] for r in hist], [r["val_loss"] for r in hist])
        if not series:
            raise UserError("none of these runs logged val_loss per epoch; nothing to plot")
        plot_lines(series, plot, "epoch", "validation loss", "runs compared")
        typer.echo(str(plot))


def main(argv: list[str] | None = None) -> int:
    """Entry point: turns user errors into one line and an exit code instead of a traceback."""
    try:
        app(args=argv, prog_name="learnloop", standalone_mode=False)
        return 0
    except UserError as e:
        print(f"learnloop: error: {e}", file=sys.stderr)
        code = 2
    except TrainingDiverged as e:
        print(f"learnloop: training diverged: {e}", file=sys.stderr)
        code = 3
    except KeyboardInterrupt:
        print("learnloop: interrupted; the last checkpoint is intact (learnloop resume RUN_DIR continues)",
              file=sys.stderr)
        code = 130
    except Exception as e:
        # typer's (click's) own signals: usage errors carry format_message(), Exit/Abort carry exit codes.
        # typer >= 0.20 vendors click, so they are recognised by shape rather than by class.
        name = type(e).__name__
        if name == "Abort":
            print("learnloop: interrupted", file=sys.stderr)
            code = 130
        elif name == "Exit" and hasattr(e, "exit_code"):
            code = e.exit_code
        elif hasattr(e, "format_message") and hasattr(e, "exit_code"):
            print(f"learnloop: error: {e.format_message()}", file=sys.stderr)
            code = 2 if e.exit_code in (1, 2) else e.exit_code
        else:
            raise
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
