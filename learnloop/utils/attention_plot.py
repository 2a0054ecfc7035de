"""Attention maps as PNG heat maps: rows are queries (outputs), columns are keys (inputs)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from learnloop.utils.io import save_figure


def plot_attention(weights, path, queries: Sequence[str] | None = None, keys: Sequence[str] | None = None,
                   title: str = "", titles: Sequence[str] | None = None, cols: int = 4) -> Path:
    """One (L, S) map, or several stacked as (N, L, S) (heads, layers or examples) drawn side by side.
    `queries`/`keys` label rows/columns (one label per position; one list shared by every panel, or a list of
    lists, one per panel)."""
    w = torch.as_tensor(weights).detach().float().cpu()
    if w.dim() == 2:
        w = w[None]
    if w.dim() != 3:
        raise ValueError(f"attention weights must be (L, S) or (N, L, S), got shape {tuple(w.shape)}")
    n = w.shape[0]
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    L, S = w.shape[1:]
    cell = 0.28
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.0, cell * S + 1.2) * cols, max(2.5, cell * L + 1.2) * rows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    def labels(lab, i):
        if lab is None:
            return None
        return lab[i] if lab and isinstance(lab[0], (list, tuple)) else lab

    for i in range(n):
        ax = axes.flat[i]
        ax.axis("on")
        ax.imshow(w[i].numpy(), cmap="viridis", vmin=0, vmax=max(float(w[i].max()), 1e-9), aspect="auto")
        q, k = labels(queries, i), labels(keys, i)
        if k is not None:
            ax.set_xticks(range(len(k)), [repr(t)[1:-1] if t.strip() == "" else t for t in k], fontsize=7,
                          rotation=90)
        if q is not None:
            ax.set_yticks(range(len(q)), [repr(t)[1:-1] if t.strip() == "" else t for t in q], fontsize=7)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
