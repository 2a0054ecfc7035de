"""Image grids on tensors (what torchvision's `make_grid` does, without torchvision)."""

from __future__ import annotations

import math

import torch


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Float images in `value_range` (default: their own min..max) -> uint8 0..255. uint8 passes through."""
    if images.dtype == torch.uint8:
        return images
    x = images.detach().float()
    lo, hi = value_range if value_range is not None else (x.min().item(), x.max().item())
    x = (x - lo) / max(hi - lo, 1e-8)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 0,
              value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Tile a batch (N, C, H, W) into one (C, H', W') uint8 image, `nrow` images per row."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"make_grid expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    x = to_uint8(images, value_range)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), pad_value,
                      dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid


def save_image_grid(images: torch.Tensor, path, nrow: int | None = None,
                    value_range: tuple[float, float] | None = None, scale: int = 2) -> None:
    """Write a batch of images as one PNG grid (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learnloop.utils.io import save_figure

    grid = make_grid(images, nrow=nrow, value_range=value_range)
    arr = grid.permute(1, 2, 0).numpy()
    fig = plt.figure(figsize=(arr.shape[1] * scale / 100, arr.shape[0] * scale / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.axis("off")
    ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None,
              vmin=0, vmax=255, interpolation="nearest")
    save_figure(fig, path)
