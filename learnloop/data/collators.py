"""Batch collators for the three pre-training objectives compared by Raffel et al. (2020, T5, sec. 3.3):

- masked LM (BERT; Devlin et al., 2019): choose each real token with probability p (15%); of the chosen,
  80% become <mask>, 10% a random token, 10% stay; targets are the original tokens at chosen positions
  and IGNORE (-100) elsewhere. Encoder-only.
- causal LM (GPT; Radford et al., 2018): inputs x_0..x_{T-2}, targets x_1..x_{T-1}; padding is IGNOREd.
  Decoder-only.
- span corruption (T5): corrupt `noise_density` (15%) of the tokens in spans of mean length `mean_span`
  (3); each span becomes one sentinel <extra_i> in the input, and the target lists every sentinel followed
  by the tokens it replaced, then <eos>. Encoder-decoder.

Every collator maps a (B, T) right-padded id batch to the task batch (*inputs, targets) and draws its
randomness from the generator it is given (`CollatingLoader` seeds it from (seed, epoch), so resumed runs
see the same corruption).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from learnloop.data.loader import EpochLoader

IGNORE = -100


def mlm_collate(ids: torch.Tensor, g: torch.Generator, *, mask_id: int, vocab_size: int, special: int = 4,
                pad_id: int = 0, p: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids below `special` (pad/unk/bos/eos) are never chosen; random replacements are drawn from
    [special, vocab_size) excluding mask_id's own slot only by chance."""
    real = ids >= special
    chosen = (torch.rand(ids.shape, generator=g) < p) & real
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    u = torch.rand(ids.shape, generator=g)
    x = ids.clone()
    x[chosen & (u < 0.8)] = mask_id
    rand_pos = chosen & (u >= 0.8) & (u < 0.9)
    x[rand_pos] = torch.randint(special, vocab_size, (int(rand_pos.sum()),), generator=g)
    return x, targets


def causal_collate(ids: torch.Tensor, g: torch.Generator | None = None, *, pad_id: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ids[:, :-1], ids[:, 1:].clone()
    y[y == pad_id] = IGNORE
    return x, y


def _span_mask(n: int, density: float, mean_span: float, g: torch.Generator) -> list[bool]:
    """A noise mask over n tokens: round(n * density) noisy tokens in about that / mean_span spans, span and
    gap lengths split at random (T5's random_spans_noise_mask)."""
    n_noise = min(max(round(n * density), 1), n - 1) if n > 1 else 0
    if n_noise == 0:
        return [False] * n
    n_spans = max(min(round(n_noise / mean_span), n_noise, n - n_noise), 1)

    def split(total, parts):
        cuts = sorted(torch.randperm(total - 1, generator=g)[: parts - 1].add(1).tolist())
        bounds = [0, *cuts, total]
        return [b - a for a, b in itertools.pairwise(bounds)]

    noise, keep = split(n_noise, n_spans), split(n - n_noise, n_spans)
    mask = []
    for k, s in zip(keep, noise):
        mask += [False] * k + [True] * s
    return mask


def span_corruption_collate(ids: torch.Tensor, g: torch.Generator, *, sentinel_ids: Sequence[int], eos_id: int,
                            bos_id: int, pad_id: int = 0, noise_density: float = 0.15, mean_span: float = 3.0
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (src, tgt_in = <bos> + target[:-1], tgt_out = target with IGNORE on padding)."""
    srcs, tgts = [], []
    for row in ids.tolist():
        toks = [t for t in row if t != pad_id]
        mask = _span_mask(len(toks), noise_density, mean_span, g)
        src, tgt, k, prev = [], [], 0, False
        for t, m in zip(toks, mask):
            if m and not prev:
                if k >= len(sentinel_ids):
                    raise ValueError(f"more than {len(sentinel_ids)} spans; add sentinel tokens")
                src.append(sentinel_ids[k])
                tgt.append(sentinel_ids[k])
                k += 1
            if m:
                tgt.append(t)
            else:
                src.append(t)
            prev = m
        srcs.append(src)
        tgts.append(tgt + [eos_id])
    S, T = max(map(len, srcs)), max(map(len, tgts))
    src_t = torch.full((len(srcs), S), pad_id, dtype=torch.long)
    out = torch.full((len(tgts), T), IGNORE, dtype=torch.long)
    tin = torch.full((len(tgts), T), pad_id, dtype=torch.long)
    for i, (s, t) in enumerate(zip(srcs, tgts)):
        src_t[i, :len(s)] = torch.tensor(s)
        out[i, :len(t)] = torch.tensor(t)
        tin[i, :len(t)] = torch.tensor([bos_id, *t[:-1]])
    return src_t, tin, out


def trim_padding(ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Drop trailing columns that are padding in every row."""
    T = int((ids != pad_id).sum(1).max().clamp_min(1))
    return ids[:, :T]


class CollatingLoader(EpochLoader):
    """Wraps a loader of (ids,) batches; applies `collate(ids, generator)` with a generator seeded by
    (seed, epoch), so the corruption of epoch e is a pure function of the seed.

    Sharding belongs to the wrapped loader (its rank and world_size are taken over, and `set_rank` and
    `set_epoch` are passed on); the corruption uses `rank_generator()`, so ranks draw different masks."""

    salt = 17

    def __init__(self, loader, collate: Callable, seed: int = 0, pad_id: int = 0):
        super().__init__(seed=seed, rank=getattr(loader, "rank", 0), world_size=getattr(loader, "world_size", 1))
        self.loader, self.collate, self.pad_id = loader, collate, pad_id

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def set_rank(self, rank: int, world_size: int) -> None:
        super().set_rank(rank, world_size)
        if hasattr(self, "loader") and hasattr(self.loader, "set_rank"):
            self.loader.set_rank(rank, world_size)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        g = self.rank_generator()
        for batch in self.loader:
            yield self.collate(trim_padding(batch[0], self.pad_id), g)
