"""PNG plots a person would rather look at than read: training curves, confusion matrices, top losses."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from learnloop.utils.io import save_figure  # noqa: E402


def plot_curves(history: list[dict], path, title: str = "") -> Path:
    """One panel per metric family (loss, accuracy, ...) with train_/val_/test_ series per epoch."""
    rows = [r for r in history if "epoch" in r and float(r["epoch"]).is_integer() and "time" in r]
    families: dict[str, list[str]] = {}
    for key in sorted({k for r in rows for k in r}):
        for prefix in ("train_", "val_", "test_"):
            if key.startswith(prefix):
                families.setdefault(key[len(prefix):], []).append(key)
    if not families:
        families = {"lr": ["lr"]}
    n = len(families)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, (fam, keys) in zip(axes[0], families.items()):
        for k in keys:
            pts = [(r["epoch"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o", ms=3, label=k.split("_")[0])
        ax.set_title(fam)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(confusion, classes, path, title: str = "confusion matrix (rows: true, cols: predicted)") -> Path:
    m = np.asarray(confusion, dtype=np.int64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = max(4.0, 0.55 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_top_losses(images: torch.Tensor, losses, preds, targets, classes, path, k: int = 16) -> Path:
    """The k samples the model is most wrong about, titled predicted/actual/loss/probability."""
    losses = torch.as_tensor(losses)
    order = losses.argsort(descending=True)[:k]
    cols = min(4, len(order))
    rows = math.ceil(len(order) / max(cols, 1))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order.tolist()):
        img = images[i]
        img = img.float() / 255 if img.dtype == torch.uint8 else img.float()
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{classes[int(preds[i])]}/{classes[int(targets[i])]}\nloss {float(losses[i]):.2f}",
                     fontsize=8)
    fig.suptitle("top losses (predicted/actual)", fontsize=10)
    return save_figure(fig, path)


def plot_lines(series: dict[str, tuple], path, xlabel: str, ylabel: str, title: str = "", logy: bool = False,
               logx: bool = False) -> Path:
    """Generic multi-line plot: {label: (x, y)}."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, marker="o" if len(x) < 30 else None, ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
        xs = sorted({float(v) for x, _ in series.values() for v in x})
        if 0 < len(xs) <= 12 and xs[0] > 0:         # few x values (sizes, step counts): label exactly those
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_bars(values: dict[str, float], path, ylabel: str, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(values) + 2), 4))
    names = list(values)
    ax.bar(range(len(names)), [values[k] for k in names], color="C0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    for i, k in enumerate(names):
        ax.text(i, values[k], f"{values[k]:.3g}", ha="center", va="bottom", fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
