"""Seeded train/validation splits returning index tensors.

- `random_split`: a permutation cut at `fraction`.
- `stratified_split`: the same fraction taken from every class, so class proportions match on both sides.
- `group_split`: whole groups go to one side (e.g. all photos of one person), so no group is on both.
"""

from __future__ import annotations

import torch


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")


def random_split(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (train_idx, val_idx) with round(n * fraction) validation indices."""
    _check(fraction)
    perm = torch.randperm(n, generator=_gen(seed))
    k = round(n * fraction)
    return perm[k:].sort().values, perm[:k].sort().values


def stratified_split(labels, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    _check(fraction)
    labels = torch.as_tensor(labels)
    g = _gen(seed)
    train, val = [], []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(len(idx) * fraction)
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def group_split(groups, fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Put about `fraction` of the *groups* on the validation side; no group appears on both sides."""
    _check(fraction)
    groups = torch.as_tensor(groups)
    uniq, inverse = groups.unique(return_inverse=True)
    perm = torch.randperm(len(uniq), generator=_gen(seed))
    k = max(1, round(len(uniq) * fraction)) if len(uniq) > 1 else 0
    val_groups = torch.zeros(len(uniq), dtype=torch.bool)
    val_groups[perm[:k]] = True
    is_val = val_groups[inverse]
    return (~is_val).nonzero().squeeze(1), is_val.nonzero().squeeze(1)
