"""What the autoencoder recipes share: the data and model sections, the Fashion-MNIST splits and the loader
of (inputs, targets, masks) batches with a seeded corruption, scoring a split, the
reconstruction grid, and reading a user's image files.

Scores (`score`): MSE per pixel and PSNR of it, pooled over the split (so a baseline that is exact on some
images, e.g. a hole on the black background, does not add infinite per-image PSNRs), mean per-image SSIM.

Splits: the 60k training images minus a seeded `data.val_fraction` for validation (the `best` checkpoint),
optionally a seeded `data.subset` of the rest for training; the test split (10k, or a fixed seeded
`data.test_subset`) for every reported number. Validation and test corruptions are drawn from fixed
seeds (VAL_SEED, TEST_SEED), so every run, whatever its seed, is scored on the same corrupted test images;
training corruptions are fresh each epoch (`EpochLoader.rank_generator()` of the loader, salted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from learnloop.data.loader import EpochLoader
from learnloop.data.splits import random_split
from learnloop.data.vision import ImageData, load_fashion_mnist
from learnloop.errors import UserError
from learnloop.metrics.image import MSE_FLOOR, ssim
from learnloop.models.autoencoder import LATENTS
from learnloop.recipes.base import Bundle
from learnloop.recipes.config import param
from learnloop.tasks.reconstruction import Corruption
from learnloop.utils.image_files import read_image_file, write_example_images
from learnloop.utils.images import save_image_grid

VAL_SEED, TEST_SEED, TEST_SUBSET_SEED = 1_000_003, 2_000_003, 0
EVAL_BATCH = 500
_CORRUPTION_MIX = 0x5851F42D4C957F2D
SMOKE = {"train.epochs": 1, "train.batch_size": 32, "data.subset": 256, "data.test_subset": 200,
         "data.val_fraction": 0.005}


# --- config sections ---------------------------------------------------------------------------------------
@dataclass
class AEDataConfig:
    dataset: str = param("fashion-mnist", "training and test images", choices=("fashion-mnist",))
    path: str = param("", "folder with the dataset's files (default: the standard search order)")
    subset: int = param(0, "train on this many images drawn with the seed (0: all that validation leaves)", min=0)
    val_fraction: float = param(0.1, "fraction of the 60k training images held out for validation", min=0.005,
                                max=0.5)
    test_subset: int = param(0, "score this many test images, a fixed seeded subset (0: all 10k)", min=0)


@dataclass
class AEModelConfig:
    width: int = param(32, "base channels w (w at H/2 x W/2, 2w at H/4 x W/4)", min=4, max=512)
    latent: str = param("vector", "latent code: a vector, or a spatial map (C x H/4 x W/4)", choices=LATENTS)
    latent_dim: int = param(16, "size of the latent vector (latent=vector)", min=1, max=4096)
    latent_channels: int = param(4, "channels of the spatial latent at H/4 x W/4 (latent=spatial)", min=1,
                                 max=256)


def model_kwargs(model: AEModelConfig) -> dict:
    return dict(width=model.width, latent=model.latent, latent_dim=model.latent_dim,
                latent_channels=model.latent_channels)


# --- data ------------------------------------------------------------------------------------------------------
class ReconstructionBatches(EpochLoader):
    """(inputs, targets, masks) batches of in-memory uint8 images scaled to [0, 1], corrupted batch by batch by
    `corruption(x, generator)` with one generator per epoch (a function of seed, epoch and rank)."""

    salt = 7919

    def __init__(self, images: torch.Tensor, batch_size: int, corruption: Callable, *, shuffle: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__(batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        self.images, self.corruption, self.n = images, corruption, len(images)

    def corruption_generator(self) -> torch.Generator:
        base = self.rank_generator().initial_seed()
        return torch.Generator().manual_seed((base + _CORRUPTION_MIX) % 2 ** 64)

    def __iter__(self):
        g = self.corruption_generator()
        for idx in self.split(self.indices()):
            yield self.corruption(self.images.index_select(0, idx).float().div_(255.0), g)


@dataclass
class Splits:
    train: ImageData
    val: ImageData
    test: ImageData


def seeded_subset(images: ImageData, n: int, seed: int) -> ImageData:
    """`n` images drawn without replacement with `seed` (all of them, in order, when n is 0 or >= their count)."""
    if 0 < n < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        images = images.subset(keep)
    return images


def load_splits(data: AEDataConfig, seed: int) -> Splits:
    full = load_fashion_mnist("train", data.path or None)
    test = seeded_subset(load_fashion_mnist("test", data.path or None), data.test_subset, TEST_SUBSET_SEED)
    tr, va = random_split(len(full), data.val_fraction, seed=seed)
    train = seeded_subset(full.subset(tr), data.subset, seed)
    val = full.subset(va)
    if len(val) == 0:
        raise UserError(f"data.val_fraction={data.val_fraction} leaves no validation images")
    return Splits(train, val, test)


def image_info(splits: Splits, dataset: str) -> dict:
    return {"dataset": dataset, "shape": list(splits.train.shape), "classes": list(splits.train.classes)}


def image_bundle(data: AEDataConfig, batch_size: int, corruption: Corruption, seed: int) -> Bundle:
    """Loaders of the train/val/test splits with `corruption`; extra["splits"] holds the images."""
    splits = load_splits(data, seed)
    if len(splits.train) < batch_size:
        raise UserError(f"need at least train.batch_size={batch_size} training images, got {len(splits.train)}")
    train = ReconstructionBatches(splits.train.images, batch_size, corruption, shuffle=True, seed=seed)
    val = ReconstructionBatches(splits.val.images, EVAL_BATCH, corruption, seed=VAL_SEED)
    test = ReconstructionBatches(splits.test.images, EVAL_BATCH, corruption, seed=TEST_SEED)
    return Bundle(train, val, test, image_info(splits, data.dataset), extra={"splits": splits})


def mean_image(images: ImageData) -> torch.Tensor:
    """The per-pixel mean (C, H, W) of uint8 images, in [0, 1]."""
    return images.images.to(torch.float64).mean(0).div(255.0).float()


# --- scoring -------------------------------------------------------------------------------------------------------
Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]        # (inputs, masks) -> images in [0, 1]


@torch.no_grad()
def score(loader, methods: dict[str, Method], masked: bool = False, with_ssim: bool = True) -> dict[str, float]:
    """Each method's images against the targets over a split: <method>_mse (per pixel), _psnr (dB, of that
    pooled MSE: 10 log10(1 / MSE), finite unless every pixel is exact), _ssim (mean per-image SSIM) and, with
    `masked`, _masked_psnr (of the MSE pooled over the masked pixels only)."""
    sums: dict[str, list] = {}
    for inputs, targets, masks in loader:
        for name, method in methods.items():
            y = method(inputs, masks)
            sq = (targets.double() - y.double()) ** 2
            got = {"se": float(sq.sum()), "pixels": sq.numel(), "ssim": float(ssim(targets, y).sum()) if with_ssim
                   else 0.0, "images": len(y)}
            if masked:
                m = masks.double().expand_as(sq)
                got.update(masked_se=float((sq * m).sum()), masked_pixels=float(m.sum()))
            acc = sums.setdefault(name, {})
            for key, v in got.items():
                acc[key] = acc.get(key, 0.0) + v
    out = {}
    for name, acc in sums.items():
        out[f"{name}_mse"] = acc["se"] / acc["pixels"]
        out[f"{name}_psnr"] = pooled_psnr(acc["se"], acc["pixels"])
        if with_ssim:
            out[f"{name}_ssim"] = acc["ssim"] / acc["images"]
        if masked:
            out[f"{name}_masked_psnr"] = pooled_psnr(acc["masked_se"], acc["masked_pixels"])
    return out


def pooled_psnr(squared_error: float, pixels: float) -> float:
    """10 log10(1 / MSE) dB of a summed squared error over `pixels` values in [0, 1] (MSE floored at 1e-10)."""
    if pixels <= 0:
        return math.nan
    return 10 * math.log10(1.0 / max(squared_error / pixels, MSE_FLOOR))


def best_sigma(loader, method_of_sigma: Callable[[float], Method], sigmas, metric: str = "psnr",
               masked: bool = False) -> float:
    """The sigma among `sigmas` whose method scores the highest mean `metric` on `loader` (validation)."""
    scores = {s: score(loader, {"m": method_of_sigma(s)}, masked, with_ssim=False)[f"m_{metric}"] for s in sigmas}
    return max(scores, key=lambda s: (scores[s], -s))


def first_batch(loader, n: int):
    """The first n (inputs, targets, masks) of a split (the images of the reconstruction grid)."""
    inputs, targets, masks = next(iter(loader))
    return inputs[:n], targets[:n], masks[:n]


def save_rows(rows: list[torch.Tensor], path) -> None:
    """A grid PNG with one row per tensor (N, C, H, W) of images in [0, 1], N per row."""
    save_image_grid(torch.cat(rows), path, nrow=len(rows[0]), value_range=(0.0, 1.0))


def prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


# --- user input ------------------------------------------------------------------------------------------------
def read_images(paths: list[str], shape) -> torch.Tensor:
    """(N, C, H, W) floats in [0, 1] from image files, grey/RGB and resized to `shape` as training saw them."""
    c, h, w = shape
    return torch.stack([read_image_file(p, (h, w), c) for p in paths]).float().div_(255.0)


def example_images(folder, shape, n: int = 2) -> list[str]:
    """n small PNG files (a light blob on a dark background, like the training images) for `predict --help`."""
    return write_example_images(folder, shape, n, kind="blob")


def output_path(run, raw: str, index: int, tag: str = "") -> Path:
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(raw).stem)[:40] or "input"
    path = run.samples / f"predict_{index}_{stem}{tag}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def grid_side(n: int) -> int:
    return math.ceil(math.sqrt(n))
