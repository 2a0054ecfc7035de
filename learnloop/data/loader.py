"""The one epoch loader, and batching of in-memory tensors with no per-sample Python work.

`EpochLoader` is the base of every learnloop loader. It owns the epoch's randomness and its split across
ranks, so a resumed run, and a run under DDP, see exactly the batches they should:

- the generator of epoch e is seeded by `seed * 1_000_003 + e + salt` (`salt` is a per-loader constant),
  a function of (seed, epoch) only: resuming at epoch e reproduces an uninterrupted run;
- `permutation(g)` is the epoch's global order of items (identical on every rank);
- `shard(order)` gives rank r its part, as `torch.utils.data.distributed.DistributedSampler` does: the
  order is padded by repeating its head (or, with `drop_last`, truncated) to a multiple of world_size,
  and rank r takes items r, r + world_size, ...; every rank gets the same number of items, hence
  `len()` = ceil (or, with `drop_last`, floor) of items / batch_size batches;
- loaders that draw fresh data rather than index items (prompts, corruption masks) use
  `rank_generator()`, which is `generator()` on rank 0 and an independent stream on other ranks.

With world_size = 1 nothing is padded and the order is the permutation itself.

`TensorLoader` slices whole batches out of tensors with one `index_select` per tensor; a `transform`
runs on the whole batch (e.g. uint8 -> float, normalise, augment), not per sample. `RandomBatches` draws
a fixed number of batches per epoch without replacement (reshuffling when the data runs out).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from learnloop.errors import UserError

_RANK_MIX = 0x9E3779B97F4A7C15        # odd 64-bit constant (golden ratio): spreads rank streams apart


class EpochLoader:
    """Base of the epoch loaders: seed, epoch, per-epoch generator, permutation, sharding and `len()`.

    A subclass sets `self.n` (or overrides `size()`) to the number of items in an epoch's global order,
    may override `permutation(g)`, and iterates over `split(indices())`."""

    salt = 0

    def __init__(self, batch_size: int = 1, *, shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch, self.n = 0, 0
        self.set_rank(rank, world_size)

    # state -----------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_rank(self, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside world_size {world_size} (need 0 <= rank < world_size)")
        self.rank, self.world_size = int(rank), int(world_size)

    # randomness ------------------------------------------------------------------------------------------
    def generator(self, epoch: int | None = None) -> torch.Generator:
        """The epoch's generator, the same on every rank: seeded by seed * 1_000_003 + epoch + salt."""
        e = self.epoch if epoch is None else epoch
        return torch.Generator().manual_seed(self.seed * 1_000_003 + e + self.salt)

    def rank_generator(self, epoch: int | None = None) -> torch.Generator:
        """`generator()` on rank 0; on rank r > 0 an independent stream that depends on (seed, epoch, r)."""
        if self.rank == 0:
            return self.generator(epoch)
        e = self.epoch if epoch is None else epoch
        base = self.seed * 1_000_003 + e + self.salt
        return torch.Generator().manual_seed((base + self.rank * _RANK_MIX) % 2**64)

    # order and sharding ----------------------------------------------------------------------------------
    def size(self) -> int:
        """Items in the epoch's global order (before sharding)."""
        return self.n

    def permutation(self, g: torch.Generator) -> torch.Tensor:
        """The epoch's global order of item indices: a seeded permutation, or 0..n-1 without shuffle."""
        n = self.size()
        return torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)

    def num_items(self) -> int:
        """Items per rank (equal on every rank)."""
        n, w = self.size(), self.world_size
        if w == 1:
            return n
        return n // w if self.drop_last else math.ceil(n / w)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global order, padded or truncated as DistributedSampler does."""
        w = self.world_size
        if w == 1:
            return order
        total = self.num_items() * w
        if total > len(order):
            reps = math.ceil(total / len(order))
            order = torch.cat([order] * reps)
        return order[self.rank:total:w]

    def indices(self) -> torch.Tensor:
        """This rank's item indices for the current epoch."""
        return self.shard(self.permutation(self.generator()))

    def split(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Consecutive batches of `batch_size` indices; a short last batch is dropped with `drop_last`."""
        batches = list(idx.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __len__(self) -> int:
        m = self.num_items()
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)


class TensorLoader(EpochLoader):
    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int = 128, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, transform: Callable | None = None,
                 device: str | torch.device | None = None, *, rank: int = 0, world_size: int = 1):
        tensors = tuple(tensors)
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}")
        super().__init__(batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank,
                         world_size=world_size)
        self.tensors, self.n = tensors, n
        self.transform, self.device = transform, device

    def _batches(self):
        if not self.shuffle and self.world_size == 1:           # contiguous slices: views, no copy
            for b in range(len(self)):
                lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.n)
                yield tuple(t[lo:hi] for t in self.tensors)
        else:
            for idx in self.split(self.indices()):
                yield tuple(t.index_select(0, idx) for t in self.tensors)

    def __iter__(self):
        for batch in self._batches():
            if self.device is not None:
                batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
            yield self.transform(batch) if self.transform is not None else batch


class RandomBatches(EpochLoader):
    """`steps` batches per epoch drawn without replacement from in-memory uint8 images (reshuffled when the
    data runs out), as floats in [-1, 1]; the order is a function of (seed, epoch) for exact resumes.

    The epoch's global stream is the concatenation of permutations of the images, cut to
    ceil(steps / world_size) * world_size batches; each rank gets ceil(steps / world_size) full batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int, seed: int = 0,
                 *, rank: int = 0, world_size: int = 1):
        if len(images) < batch_size:
            raise UserError(f"need at least batch_size={batch_size} training images, got {len(images)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        super().__init__(batch_size, shuffle=True, seed=seed, rank=rank, world_size=world_size)
        self.images, self.labels, self.steps, self.n = images, labels, steps, len(images)

    def size(self) -> int:
        return math.ceil(self.steps / self.world_size) * self.world_size * self.batch_size

    def permutation(self, g: torch.Generator) -> torch.Tensor:
        need = self.size()
        return torch.cat([torch.randperm(self.n, generator=g) for _ in range(math.ceil(need / self.n))])[:need]

    def __iter__(self):
        for i in self.split(self.indices()):
            yield self.images[i].float().div_(127.5).sub_(1.0), self.labels[i]


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
