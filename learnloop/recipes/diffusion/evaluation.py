"""Evaluation of a diffusion run from its checkpoints: the training summary, the EMA weights' samples scored
with learnloop.evaluation.generative (FID, KID, precision, recall, density, coverage beside the real-data
floor and the noise ceiling), and FID / precision / recall vs the number of sampling steps for DDPM and DDIM
(a table and PNG plots), with the images per second of every sampler setting.
"""

from __future__ import annotations

import time

import torch

from learnloop.errors import UserError
from learnloop.evaluation.generative import evaluate_generated, format_report
from learnloop.recipes.diffusion.common import STAGE, DiffusionConfig, eval_protocol, sample_uint8
from learnloop.utils.images import save_image_grid
from learnloop.utils.io import save_figure, write_text
from learnloop.utils.plots import plot_curves

CURVE_METRICS = ("fid", "precision", "recall", "density", "coverage")


def flatten(prefix: str, result: dict) -> dict:
    """Numbers of a nested result as flat metrics ("floor_fid", "class_hist_3", ...)."""
    out = {}
    for k, v in result.items():
        if isinstance(v, dict):
            out.update(flatten(f"{prefix}{k}_", v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
            out.update({f"{prefix}{k}_{i}": float(x) for i, x in enumerate(v)})
    return out


def training_summary(run, stage: str = STAGE, title: str | None = None) -> dict:
    """Epochs, steps, CPU minutes, stop reason and the last epoch's train_/val_ metrics of a DiffusionTask
    stage, from its `last` checkpoint; plots/curves.png."""
    state = run.checkpoint(stage, "last")
    if state is None:
        raise UserError(f"{run.path}: no checkpoint for stage '{stage or 'the model'}'; finish it with "
                        f"`learnloop resume {run.path}`")
    task = state.get("task") if isinstance(state.get("task"), dict) else {}
    out = {"epochs_trained": state["epoch"], "steps": state["step"],
           "train_cpu_min": float(task.get("elapsed", 0.0)) / 60}
    if isinstance(state.get("best"), (int, float)):
        out["best_val_loss"] = float(state["best"])
    if state.get("stop_reason"):
        out["stop_reason"] = str(state["stop_reason"])
    history = state.get("history") if isinstance(state.get("history"), list) else []
    if history and isinstance(history[-1], dict):
        out.update({k: v for k, v in history[-1].items() if k.startswith(("train_", "val_"))})
    history = run.history(stage)
    if history:
        plot_curves(history, run.plots / "curves.png", title=title or run.path.parent.name)
    if out.get("stop_reason"):
        run.say(out["stop_reason"])
    return out


def _timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def evaluate_samples(model, diffusion, cfg: DiffusionConfig, run, seed: int) -> dict:
    """`eval.samples` images with the `sampler` settings, scored with the `eval` protocol (prefix none for the
    model, floor_ / ceiling_ for the reference rows), their speed, and a 10 x 10 grid in plots/."""
    s = cfg.sampler
    images, wall, cpu = _timed(sample_uint8, model, diffusion, cfg, cfg.eval.samples, seed + 77)
    result = evaluate_generated(images, cfg.eval, seed)
    run.say(f"{s.kind}, {s.steps} steps ({s.spacing}), {cfg.eval.samples} samples, {wall:.0f} s:\n"
            f"{format_report(result)}")
    metrics = flatten("", {k: v for k, v in result.items() if k not in ("floor", "ceiling", "protocol")})
    for key in ("floor", "ceiling", "protocol"):
        if isinstance(result.get(key), dict):
            metrics.update(flatten(f"{key}_", result[key]))
    metrics.update({"sample_images_per_s": len(images) / wall, "sample_images_per_cpu_s": len(images) / cpu,
                    "sample_threads": float(torch.get_num_threads())})
    save_image_grid(images[:100], run.plots / "samples.png", nrow=10)
    return metrics


def steps_curve(model, diffusion, cfg: DiffusionConfig, run, seed: int) -> dict:
    """Every (sampler, steps) of the `curve` section: `curve.samples` images scored with the `eval` protocol
    at that N; rows to plots/steps_curve.md, FID / precision / recall vs steps to plots/steps_curve.png,
    metrics "curve_<sampler><steps>_<metric>" and "curve_floor_<metric>" / "curve_ceiling_<metric>"."""
    n = cfg.curve.samples
    points = [("ddpm", s) for s in cfg.curve.ddpm_steps] + [("ddim", s) for s in cfg.curve.ddim_steps]
    if not n or not points:
        return {}
    protocol = eval_protocol(cfg, n)
    rows, metrics, floor, ceiling = [], {}, None, None
    for i, (kind, steps) in enumerate(points):
        images, wall, cpu = _timed(sample_uint8, model, diffusion, cfg, n, seed + 99, kind=kind, steps=steps)
        result = evaluate_generated(images, protocol, seed, with_floor=i == 0, with_ceiling=i == 0)
        floor, ceiling = (result["floor"], result["ceiling"]) if i == 0 else (floor, ceiling)
        row = {"sampler": kind, "steps": steps, **{m: float(result[m]) for m in CURVE_METRICS},
               "images_per_s": n / wall, "images_per_cpu_s": n / cpu}
        rows.append(row)
        metrics.update({f"curve_{kind}{steps}_{k}": v for k, v in row.items() if k not in ("sampler", "steps")})
        run.say(f"curve: {kind} {steps} steps: FID {row['fid']:.4g}, precision {row['precision']:.3f}, "
                f"recall {row['recall']:.3f} ({wall:.0f} s)")
    for name, ref in (("floor", floor), ("ceiling", ceiling)):
        metrics.update({f"curve_{name}_{m}": float(ref[m]) for m in CURVE_METRICS})
    _write_curve(rows, floor, ceiling, cfg, run)
    return metrics


def _write_curve(rows: list[dict], floor: dict, ceiling: dict, cfg: DiffusionConfig, run) -> None:
    s, n = cfg.sampler, cfg.curve.samples
    head = ["sampler", "steps", *CURVE_METRICS, "images/s", "images/CPU-s"]
    lines = [f"# Sampling steps vs sample quality ({n} samples per row, {s.spacing} spacing, DDIM eta {s.eta:g}, "
             f"DDPM variance {s.variance}, clip x0 {s.clip_x0}, extractor {cfg.eval.extractor}, "
             f"reference {cfg.eval.reference}, k {cfg.eval.k})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["sampler"], str(r["steps"]), *(f"{r[m]:.4g}" for m in CURVE_METRICS),
                 f"{r['images_per_s']:.3g}", f"{r['images_per_cpu_s']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    for name, ref in (("floor (real)", floor), ("ceiling (noise)", ceiling)):
        lines.append("| " + " | ".join([name, "-", *(f"{ref[m]:.4g}" for m in CURVE_METRICS), "-", "-"]) + " |")
    write_text(run.plots / "steps_curve.md", "\n".join(lines) + "\n")
    _plot_curve(rows, floor, ceiling, run.plots / "steps_curve.png", n)


def _plot_curve(rows: list[dict], floor: dict, ceiling: dict, path, n: int) -> None:
    """FID, precision and recall vs steps (log x), one panel each, DDPM and DDIM with the reference rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    xs = [r["steps"] for r in rows]
    for ax, metric in zip(axes, ("fid", "precision", "recall")):
        for kind, marker in (("ddpm", "o"), ("ddim", "s")):
            pts = [(r["steps"], r[metric]) for r in rows if r["sampler"] == kind]
            if pts:
                ax.plot(*zip(*pts), marker=marker, ms=4, label=kind.upper())
        for name, ref, style in (("floor (real)", floor, "--"), ("ceiling (noise)", ceiling, ":")):
            ax.hlines(ref[metric], min(xs), max(xs), colors="grey", linestyles=style, label=name)
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(xs)), [str(x) for x in sorted(set(xs))])
        ax.minorticks_off()
        if metric == "fid":
            ax.set_yscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"sample quality vs sampling steps ({n} samples per point)", fontsize=10)
    save_figure(fig, path)
