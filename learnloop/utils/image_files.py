"""Reading a user's image file (PNG, JPEG, any format Pillow decodes) as the uint8 tensor a model expects.

Inputs are untrusted: the size on disk and in pixels is bounded before decoding, non-regular files are
refused, and every failure is one `UserError` line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from learnloop.errors import UserError
from learnloop.utils.io import open_regular

MAX_FILE_BYTES = 32 * 2 ** 20
MAX_PIXELS = 40_000_000


def read_image_file(path, size: tuple[int, int], channels: int = 1) -> torch.Tensor:
    """(channels, H, W) uint8 from an image file, converted to grey (channels=1) or RGB (3) and resized to
    `size` = (H, W) with bilinear filtering (aspect ratio not kept: the model sees what training saw)."""

    path = Path(path)
    try:
        f = open_regular(path, "rb")           # never blocks on a FIFO; a folder or device is one line
    except FileNotFoundError:
        raise UserError(f"{path}: no such image file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    with f:
        if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:
            raise UserError(f"{path}: image file larger than {MAX_FILE_BYTES // 2 ** 20} MiB")
        return _decode(f, path, size, channels)


def _decode(f, path: Path, size: tuple[int, int], channels: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            if im.width * im.height > MAX_PIXELS:
                raise UserError(f"{path}: image of {im.width}x{im.height} pixels is too large")
            im = im.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: not a readable image ({type(e).__name__})") from None
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()


def write_example_images(folder, shape, n: int = 2, kind: str = "noise") -> list[str]:
    """n PNG files of `shape` (C, H, W) in `folder`, for a predictor's `examples()`: seeded uniform noise, or
    with kind="blob" a light blob on a dark background (like Fashion-MNIST images)."""
    from PIL import Image

    c, h, w = shape
    g = torch.Generator().manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    paths = []
    for i in range(n):
        if kind == "blob":
            blob = torch.exp(-((rows - h / 2) ** 2 / (h / 4 + 2 * i) ** 2 + (cols - w / 2) ** 2 / (w / 6 + i) ** 2))
            pixels = (blob * 230).to(torch.uint8).unsqueeze(-1).repeat(1, 1, c)
        else:
            pixels = torch.randint(0, 256, (h, w, c), generator=g, dtype=torch.uint8)
        path = Path(folder) / f"example-{i}.png"
        Image.fromarray(pixels.squeeze(-1).numpy() if c == 1 else pixels.numpy()).save(path)
        paths.append(str(path))
    return paths
