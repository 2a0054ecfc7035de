"""CART classification tree (Breiman, Friedman, Olshen & Stone, "Classification and Regression Trees", 1984).

A node t with class weights c_k (sum W_t) has impurity
    Gini      i(t) = 1 - sum_k (c_k / W_t)^2
    entropy   i(t) = -sum_k (c_k / W_t) log2(c_k / W_t)
and is split on the (feature f, threshold s) that minimises the weighted child impurity
    W_L i(t_L) + W_R i(t_R),      t_L = {x : x_f <= s},  t_R = {x : x_f > s},
with s the midpoint between two consecutive distinct values of x_f. Split search is sort based: for every candidate
feature at once the node's rows are sorted (argsort along axis 0) and cumulative sums of the one-hot class weights
give (c_L, c_R) at every cut position in one array operation.
Stops (as scikit-learn): depth = max_depth, fewer than min_samples_split rows, no cut leaving min_samples_leaf rows
on each side, or a pure node. With max_features, each node draws that many of its non-constant features
(a feature constant in a node is dropped for its whole subtree, as scikit-learn does).
Feature importance (mean decrease in impurity, Breiman 1984 sec. 5.3.4):
    imp(f) = sum over nodes t split on f of  W_t i(t) - W_L i(t_L) - W_R i(t_R),   normalised to sum to 1.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.checks import as_features, as_labels, require_fitted


def weighted_impurity(counts: np.ndarray, criterion: str, total: np.ndarray | None = None) -> np.ndarray:
    """W i(t) for class-weight vectors along the last axis (W = their sum, pass it if known); 0 if empty."""
    total = counts.sum(axis=-1) if total is None else total
    safe = np.where(total > 0, total, 1.0)
    if criterion == "gini":
        return total - np.einsum("...k,...k->...", counts, counts) / safe
    logp = np.log2(np.where(counts > 0, counts, 1.0) / np.where(counts > 0, safe[..., None], 1.0))
    return -np.einsum("...k,...k->...", counts, logp)


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


def best_split(x: np.ndarray, y: np.ndarray, criterion: str, min_leaf: int):
    """(column, threshold, child weighted impurity sum) of the best cut of rows x (m, f) with class weights y (m, K)."""
    m = len(x)
    order = np.argsort(x, axis=0, kind="stable")
    xs = np.take_along_axis(x, order, axis=0)
    left = np.cumsum(y[order], axis=0)[:-1]  # (m-1, f, K): class weights of the first i+1 sorted rows
    right = left[-1:] + y[order[-1]][None] - left
    w_left = np.cumsum(y.sum(axis=1)[order], axis=0)[:-1]
    cost = (weighted_impurity(left, criterion, w_left)
            + weighted_impurity(right, criterion, w_left[-1] + y[order[-1]].sum(axis=-1) - w_left))
    position = np.arange(1, m)[:, None]
    valid = (xs[1:] > xs[:-1]) & (position >= min_leaf) & (m - position >= min_leaf)
    if not valid.any():
        return None
    cost = np.where(valid, cost, np.inf)
    i, j = np.unravel_index(np.argmin(cost), cost.shape)
    threshold = 0.5 * (xs[i, j] + xs[i + 1, j])
    if threshold >= xs[i + 1, j]:  # the midpoint rounded up to the upper value
        threshold = xs[i, j]
    return j, threshold, cost[i, j]


class DecisionTree:
    def __init__(self, criterion: str = "gini", max_depth: int | None = None, min_samples_split: int = 2,
                 min_samples_leaf: int = 1, max_features=None, random_state=None):
        if criterion not in ("gini", "entropy"):
            raise UserError(f"criterion must be 'gini' or 'entropy', got {criterion!r}")
        if min_samples_split < 2 or min_samples_leaf < 1:
            raise UserError("min_samples_split must be >= 2 and min_samples_leaf >= 1")
        self.criterion, self.max_depth = criterion, max_depth
        self.min_samples_split, self.min_samples_leaf = min_samples_split, min_samples_leaf
        self.max_features, self.random_state = max_features, random_state

    def fit(self, x, y, sample_weight=None) -> DecisionTree:
        x = as_features(x)
        y = as_labels(y, len(x))
        if len(x) == 0:
            raise UserError("cannot fit a tree on zero samples")
        w = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (len(x),) or np.any(w < 0):
            raise UserError(f"sample_weight must be non-negative with shape ({len(x)},)")
        self.classes_, codes = np.unique(y, return_inverse=True)
        self.n_features_in_ = x.shape[1]
        onehot = np.eye(len(self.classes_))[codes] * w[:, None]
        self._build(x, onehot, np.random.default_rng(self.random_state))
        return self

    def _build(self, x: np.ndarray, onehot: np.ndarray, rng: np.random.Generator) -> None:
        n_draw = resolve_max_features(self.max_features, x.shape[1])
        max_depth = np.inf if self.max_depth is None else self.max_depth
        feature, threshold, left, right, value, depth_of = [], [], [], [], [], []
        importance = np.zeros(x.shape[1])
        stack = [(np.arange(len(x)), 0, -1, False, np.arange(x.shape[1]))]
        while stack:
            rows, depth, parent, is_left, live = stack.pop()
            node = len(feature)
            if parent >= 0:
                (left if is_left else right)[parent] = node
            counts = onehot[rows].sum(axis=0)
            feature.append(-1)
            threshold.append(0.0)
            left.append(-1)
            right.append(-1)
            value.append(counts)
            depth_of.append(depth)
            node_cost = weighted_impurity(counts, self.criterion)
            if (depth >= max_depth or len(rows) < self.min_samples_split
                    or len(rows) < 2 * self.min_samples_leaf or node_cost <= 1e-12 * counts.sum()):
                continue
            xn = x[np.ix_(rows, live)]
            varies = xn.max(axis=0) > xn.min(axis=0)  # a feature constant here stays constant below
            live, xn = live[varies], xn[:, varies]
            pick = rng.choice(len(live), n_draw, replace=False) if n_draw < len(live) else np.arange(len(live))
            found = best_split(xn[:, pick], onehot[rows], self.criterion, self.min_samples_leaf)
            if found is None:
                continue
            column, cut, child_cost = found
            f = int(live[pick[column]])
            feature[node], threshold[node] = f, float(cut)
            importance[f] += node_cost - child_cost
            goes_left = xn[:, pick[column]] <= cut
            stack.append((rows[~goes_left], depth + 1, node, False, live))
            stack.append((rows[goes_left], depth + 1, node, True, live))
        self.feature_ = np.array(feature)
        self.threshold_ = np.array(threshold)
        self.children_left_, self.children_right_ = np.array(left), np.array(right)
        value = np.array(value)
        self.value_ = value / value.sum(axis=1, keepdims=True)
        self.depth_ = int(max(depth_of))
        total = importance.sum()
        self.feature_importances_ = importance / total if total > 0 else importance

    @property
    def n_leaves(self) -> int:
        require_fitted(self, "feature_")
        return int((self.feature_ < 0).sum())

    def apply(self, x) -> np.ndarray:
        """Index of the leaf each row of x lands in, descending all rows level by level."""
        require_fitted(self, "feature_")
        x = as_features(x, self.n_features_in_)
        node = np.zeros(len(x), dtype=int)
        active = np.flatnonzero(self.feature_[node] >= 0)
        while len(active):
            at = node[active]
            goes_left = x[active, self.feature_[at]] <= self.threshold_[at]
            node[active] = np.where(goes_left, self.children_left_[at], self.children_right_[at])
            active = active[self.feature_[node[active]] >= 0]
        return node

    def predict_proba(self, x) -> np.ndarray:
        leaves = self.apply(x)
        return self.value_[leaves]

    def predict(self, x) -> np.ndarray:
        proba = self.predict_proba(x)
        return self.classes_[proba.argmax(axis=1)]
