"""`learnloop runs` (every run under a root folder, one row each) and `learnloop compare` (several runs'
final metrics side by side, optionally their validation curves in one plot). A run whose files cannot be
read is listed or left out with the reason, short; it never stops the table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from learnloop.cli.dispatch import interruptible
from learnloop.cli.checks import _check_path_text, _check_plot_file, _existing
from learnloop.cli.text import _fmt, _q, _table, one_line
from learnloop.errors import UserError


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


def runs(root: Path = typer.Option(Path("runs"), help="root folder of run folders")):
    """Table of all runs under ROOT: recipe, folder, status, main metric. A run whose files cannot be read
    is listed as unreadable, with the reason."""
    from learnloop.engine.run import RunFolder
    from learnloop.recipes import recipes

    interruptible()
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


def compare(
    run_dirs: List[Path] = typer.Argument(..., help="two or more run folders"),
    plot: Optional[Path] = typer.Option(None, help="also write a PNG of their validation curves here"),
):
    """Show several runs' final metrics side by side (and optionally their curves in one plot). A run
    whose files cannot be read is left out, with the reason."""
    from learnloop.engine.run import RunFolder

    interruptible()
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
