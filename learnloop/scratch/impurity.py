"""Node impurities and per-node feature sampling shared by both CART split searches (Breiman et al. 1984;
feature sampling per split: Breiman, "Random forests", 2001).

For class weights c_k of a node t with W_t = sum_k c_k:
    Gini      W_t i(t) = W_t - sum_k c_k^2 / W_t
    entropy   W_t i(t) = -sum_k c_k log2(c_k / W_t)
The class sums run k = 0, 1, ... one elementwise operation at a time, so a count vector gets the same float
result wherever it sits in an array; the vectorised and the reference split searches rely on that to agree.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError


def weighted_impurity(counts: np.ndarray, criterion: str, total: np.ndarray | None = None) -> np.ndarray:
    """W i(t) for class-weight vectors along the last axis (W = their sum, pass it if known); 0 if empty."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1) if total is None else total
    safe = np.where(total > 0, total, 1.0)
    if criterion == "gini":
        squares = counts[..., 0] * counts[..., 0]
        for k in range(1, counts.shape[-1]):
            squares = squares + counts[..., k] * counts[..., k]
        return total - squares / safe
    result = np.zeros(np.shape(total))
    for k in range(counts.shape[-1]):
        c = counts[..., k]
        present = c > 0
        result = result - c * np.log2(np.where(present, c, 1.0) / np.where(present, safe, 1.0))
    return result


def resolve_max_features(max_features, n_features: int) -> int:
    if max_features is None:
        return n_features
    if max_features == "sqrt":
        return max(1, int(np.sqrt(n_features)))
    if max_features == "log2":
        return max(1, int(np.log2(n_features)))
    if isinstance(max_features, float) and 0 < max_features <= 1:
        return max(1, int(max_features * n_features))
    if isinstance(max_features, (int, np.integer)) and 1 <= max_features:
        return min(int(max_features), n_features)
    raise UserError(f"max_features must be None, 'sqrt', 'log2', a fraction in (0, 1] or a count, got {max_features!r}")


def draw_features(keys: np.ndarray, live: np.ndarray, n_draw: int) -> np.ndarray:
    """Candidate-feature mask per node (row): its n_draw live features with the smallest uniform keys.

    keys (nodes, d) are rng.random((nodes, d)), one row per searched node in breadth-first order; live (nodes, d)
    marks the features that are not constant in the node. With fewer than n_draw live features a node searches
    all of them; keys are distinct with probability 1."""
    if n_draw >= live.shape[1]:
        return live.copy()
    smallest = np.argpartition(np.where(live, keys, np.inf), n_draw - 1, axis=1)[:, :n_draw]
    chosen = np.zeros(live.shape, dtype=bool)
    np.put_along_axis(chosen, smallest, True, axis=1)
    return chosen & live
