"""Image datasets held in memory as uint8 tensors: Fashion-MNIST, any MNIST-style IDX folder, 8x8 digits.

`ImageData.images` is (N, C, H, W) uint8 and `labels` is (N,) int64; conversion to float and any
augmentation happen on whole batches (see `learnloop.data.augment`), never per sample.

An IDX folder holds `train-images-idx3-ubyte` (and `-labels-idx1-`, `t10k-`...), each gzip'd or not and
named with or without `.gz` (the content decides, see `learnloop.data.idx`). Files are checked as they are
read: uint8 (N, H, W) images with N > 0, integer labels in 0..classes-1, as many labels as images; any
violation is a one-line `CorruptFileError` naming the file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from learnloop.data import registry
from learnloop.data.idx import read_idx
from learnloop.errors import CorruptFileError, UserError

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz", ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz", ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}


def _alternatives(name: str) -> tuple[str, ...]:
    """Other accepted names of an IDX file: uncompressed, and with `.idx` for `-idx` (some mirrors)."""
    plain, dotted = name.removesuffix(".gz"), name.replace("-idx", ".idx")
    return (plain, dotted, dotted.removesuffix(".gz"))


IDX_ALIASES = {name: _alternatives(name) for name in IDX_FILES.values()}


@dataclass
class ImageData:
    images: torch.Tensor        # (N, C, H, W) uint8
    labels: torch.Tensor        # (N,) int64
    classes: tuple[str, ...]
    name: str = ""

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> "ImageData":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageData(self.images[index], self.labels[index], self.classes, self.name)

    def select_classes(self, keep: list[int]) -> "ImageData":
        """Keep only classes `keep`, relabelled 0..len(keep)-1 in the given order."""
        mask = torch.isin(self.labels, torch.tensor(keep))
        remap = torch.full((int(self.labels.max()) + 1,), -1, dtype=torch.long)
        remap[torch.tensor(keep)] = torch.arange(len(keep))
        return ImageData(self.images[mask], remap[self.labels[mask]],
                         tuple(self.classes[k] for k in keep), self.name)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


def _find(folder: Path, split: str, kind: str) -> Path:
    """The first present regular file among the accepted names; else a present odd one (read_idx names it)."""
    name = IDX_FILES[(split, kind)]
    candidates = [folder / n for n in (name, *IDX_ALIASES[name])]
    for cand in candidates:
        if cand.is_file():
            return cand
    for cand in candidates:
        if cand.exists():
            return cand
    raise CorruptFileError(f"{folder}: missing {name} (or its uncompressed form)")


@functools.lru_cache(maxsize=8)
def _read_idx_split(folder: str, split: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    folder = Path(folder)
    xp, yp = _find(folder, split, "images"), _find(folder, split, "labels")
    x, y = read_idx(xp), read_idx(yp)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise CorruptFileError(f"{xp}: expected uint8 images of shape (N, H, W), got {x.dtype} {x.shape}")
    if len(x) == 0 or 0 in x.shape:
        raise CorruptFileError(f"{xp}: holds no images (shape {x.shape})")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise CorruptFileError(f"{yp}: expected a 1-d array of integer labels, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise CorruptFileError(f"{folder}: {split} images {x.shape} and labels {y.shape} do not match "
                               f"({xp.name} holds {len(x)} images, {yp.name} {len(y)} labels)")
    if int(y.min()) < 0:
        raise CorruptFileError(f"{yp}: label {int(y.min())} is negative")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64)), str(yp)


def load_idx_folder(folder, split: str = "train", classes=None, name: str = "") -> ImageData:
    """Load a folder of MNIST-style IDX files (train-images-idx3-ubyte[.gz], t10k-...)."""
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got '{split}'")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    x, y, labels_file = _read_idx_split(str(folder.resolve()), split)
    top = int(y.max())
    classes = tuple(classes) if classes else tuple(str(i) for i in range(top + 1))
    if top >= len(classes):
        raise CorruptFileError(f"{labels_file}: label {top} is outside the {len(classes)} classes "
                               f"0..{len(classes) - 1}")
    return ImageData(x, y, classes, name or folder.name)


def _fashion_loader(folder: Path, split: str = "train") -> ImageData:
    return load_idx_folder(folder, split, FASHION_CLASSES, "fashion-mnist")


def _mnist_loader(folder: Path, split: str = "train") -> ImageData:
    return load_idx_folder(folder, split, None, "mnist")


def _digits_loader(folder: Path | None = None, split: str = "all") -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    return ImageData(x, torch.from_numpy(d.target.astype(np.int64)), tuple(str(i) for i in range(10)), "digits")


registry.register(registry.DatasetSpec(
    "fashion-mnist", "Zalando's 70k 28x28 grey clothing images, 10 classes (Xiao et al., 2017)",
    files=tuple(IDX_FILES.values()), aliases=IDX_ALIASES, system_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four "
                 "IDX .gz files in $LEARNLOOP_DATA/fashion-mnist/",
    loader=_fashion_loader))
registry.register(registry.DatasetSpec(
    "mnist", "LeCun's 70k 28x28 handwritten digits (or any IDX folder, e.g. KMNIST)",
    files=tuple(IDX_FILES.values()), aliases=IDX_ALIASES, system_dirs=("/usr/share/datasets/mnist",),
    install_hint="put the four MNIST IDX .gz files in $LEARNLOOP_DATA/mnist/ (or pass their folder)",
    loader=_mnist_loader))
registry.register(registry.DatasetSpec(
    "digits", "scikit-learn's 1,797 8x8 handwritten digits (embedded; always available)",
    files=(), system_dirs=(), loader=lambda folder, **kw: _digits_loader(None, **kw)))


def load_fashion_mnist(split: str = "train", path=None) -> ImageData:
    return registry.load("fashion-mnist", path, split=split)


def load_digits() -> ImageData:
    return _digits_loader()
