"""Batching in-memory tensors with no per-sample Python work.

`TensorLoader` slices whole batches out of tensors with one `index_select` per tensor. Shuffling uses a
permutation drawn from a generator seeded by (seed, epoch), so epoch e's order is a pure function of
the seed: a resumed run sees exactly the batches an uninterrupted one would. A `transform` runs on the
whole batch (e.g. uint8 -> float, normalise, augment), not per sample.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch


class TensorLoader:
    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int = 128, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, transform: Callable | None = None,
                 device: str | torch.device | None = None):
        tensors = tuple(tensors)
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors, self.n = tensors, n
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.transform, self.device = seed, transform, device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def order(self) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        perm = self.order()
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.n)
            if perm is None:
                batch = tuple(t[lo:hi] for t in self.tensors)
            else:
                idx = perm[lo:hi]
                batch = tuple(t.index_select(0, idx) for t in self.tensors)
            if self.device is not None:
                batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
            yield self.transform(batch) if self.transform is not None else batch


def image_transform(mean: float = 0.0, std: float = 1.0, augment: Callable | None = None):
    """Batch transform for (uint8 images, labels): scale to [0, 1], optional augmentation, normalise."""

    def transform(batch):
        x, *rest = batch
        x = x.float().div_(255.0)
        if augment is not None:
            x = augment(x)
        if mean != 0.0 or std != 1.0:
            x = (x - mean) / std
        return (x, *rest)

    return transform
