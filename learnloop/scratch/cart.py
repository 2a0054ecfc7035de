"""CART classification tree (Breiman, Friedman, Olshen & Stone, "Classification and Regression Trees", 1984).

A node t with class weights c_k (sum W_t) has impurity
    Gini      i(t) = 1 - sum_k (c_k / W_t)^2
    entropy   i(t) = -sum_k (c_k / W_t) log2(c_k / W_t)
and is split on the (feature f, threshold s) that minimises the weighted child impurity
    W_L i(t_L) + W_R i(t_R),      t_L = {x : x_f <= s},  t_R = {x : x_f > s},
with s the midpoint between two consecutive distinct values of x_f in t (the lower value if the midpoint rounds
up to the upper one).
Tie rule: among cuts of exactly equal cost, the one leaving the fewest rows on the left wins, then the one on the
lowest feature index.
Stops (as scikit-learn): depth = max_depth, fewer than min_samples_split rows, no cut leaving min_samples_leaf rows
on each side, or a pure node. Nodes are searched breadth first (level by level, a left child before its right
sibling); with max_features, every searched node draws rng.random(d) in that order and searches the max_features
features that are not constant in it with the smallest keys (`draw_features`). The node arrays are stored in
depth-first preorder, left child first.
Feature importance (mean decrease in impurity, Breiman 1984 sec. 5.3.4):
    imp(f) = sum over nodes t split on f of  W_t i(t) - W_L i(t_L) - W_R i(t_R),   normalised to sum to 1.

Split search (`split_search`), two implementations of that one rule:
    "reference"  node by node, readable: `best_split` sorts the node's rows per feature (argsort along axis 0) and
                 cumulative sums of one-hot class weights give (c_L, c_R) at every cut position at once;
    "levelwise"  every node of a depth at once, on values presorted once, with sibling subtraction
                 (`learnloop.scratch.cart_levelwise`); needs whole-number sample weights;
    "auto"       (default) levelwise when the weights are whole numbers (none, counts, bootstrap draws) and the
                 data has at least AUTO_MIN_VALUES values, reference otherwise. With whole-number weights every
                 class sum is an exact integer in float64, so both give the same tree, node for node (tested).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.cart_levelwise import Presorted, grow
from learnloop.scratch.checks import as_features, as_labels, require_fitted
from learnloop.scratch.impurity import draw_features, resolve_max_features, weighted_impurity

__all__ = ["DecisionTree", "best_split", "resolve_max_features", "weighted_impurity"]

SPLIT_SEARCHES = ("auto", "levelwise", "reference")
AUTO_MIN_VALUES = 20_000  # rows * features; below it the per-node search wins (measured: breast cancer, Adult)


def best_split(x: np.ndarray, y: np.ndarray, criterion: str, min_leaf: int):
    """(column, threshold, child weighted impurity sum) of the best cut of rows x (m, f) with class weights y (m, K).

    Ties: the first minimum of cost[i, j] in row-major order, i.e. fewest rows on the left (i + 1), then column j."""
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
                 min_samples_leaf: int = 1, max_features=None, random_state=None, split_search: str = "auto"):
        if criterion not in ("gini", "entropy"):
            raise UserError(f"criterion must be 'gini' or 'entropy', got {criterion!r}")
        if min_samples_split < 2 or min_samples_leaf < 1:
            raise UserError("min_samples_split must be >= 2 and min_samples_leaf >= 1")
        if split_search not in SPLIT_SEARCHES:
            raise UserError(f"split_search must be one of {', '.join(SPLIT_SEARCHES)}, got {split_search!r}")
        self.criterion, self.max_depth = criterion, max_depth
        self.min_samples_split, self.min_samples_leaf = min_samples_split, min_samples_leaf
        self.max_features, self.random_state, self.split_search = max_features, random_state, split_search

    def fit(self, x, y, sample_weight=None) -> DecisionTree:
        x = as_features(x)
        y = as_labels(y, len(x))
        w = self._weights(sample_weight, len(x))
        self.classes_, codes = np.unique(y, return_inverse=True)
        self.n_features_in_ = x.shape[1]
        if self.uses_levelwise(w, x.shape[1]):
            fit_levelwise([self], Presorted(x), [np.arange(len(x))], [w], y)
            return self
        self._set_nodes(self._grow_reference(x, codes, w, np.random.default_rng(self.random_state)))
        return self

    def settings(self) -> tuple:
        return (self.criterion, self.max_depth, self.min_samples_split, self.min_samples_leaf, self.max_features)

    def uses_levelwise(self, w: np.ndarray, n_features: int) -> bool:
        """split_search resolved for weights w (one per row): levelwise needs whole numbers (its sums are then
        exact); "auto" also leaves data smaller than AUTO_MIN_VALUES values to the per-node search, faster there."""
        whole = bool(np.all(w == np.floor(w)) and w.sum() * max(n_features, 1) < 2.0**52)
        if self.split_search == "levelwise" and not whole:
            raise UserError("split_search='levelwise' needs whole-number sample weights; use 'auto' or 'reference'")
        if self.split_search == "auto":
            return whole and len(w) * n_features >= AUTO_MIN_VALUES
        return self.split_search == "levelwise"

    @staticmethod
    def _weights(sample_weight, n: int) -> np.ndarray:
        if n == 0:
            raise UserError("cannot fit a tree on zero samples")
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)):
            raise UserError(f"sample_weight must be finite and non-negative with shape ({n},)")
        return w

    def _grow_reference(self, x: np.ndarray, codes: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> dict:
        """Breadth-first growth one node at a time (`best_split` per node); node arrays in breadth-first order."""
        onehot = np.eye(len(self.classes_))[codes] * w[:, None]
        d = x.shape[1]
        n_draw = resolve_max_features(self.max_features, d)
        max_depth = np.inf if self.max_depth is None else self.max_depth
        names = ("parent", "is_left", "depth", "counts", "feature", "threshold", "node_cost", "child_cost")
        nodes = {name: [] for name in names}
        queue = deque([(np.arange(len(x)), -1, False, 0)])
        while queue:
            rows, parent, is_left, depth = queue.popleft()
            node = len(nodes["parent"])
            counts = onehot[rows].sum(axis=0)
            node_cost = weighted_impurity(counts, self.criterion)
            for name, value in zip(names, (parent, is_left, depth, counts, -1, 0.0, node_cost, 0.0)):
                nodes[name].append(value)
            if (depth >= max_depth or len(rows) < self.min_samples_split
                    or len(rows) < 2 * self.min_samples_leaf or node_cost <= 1e-12 * counts.sum()):
                continue
            xn = x[rows]
            live = xn.max(axis=0) > xn.min(axis=0)  # a feature constant here stays constant below
            if n_draw < d:
                live = draw_features(rng.random((1, d)), live[None], n_draw)[0]
            columns = np.flatnonzero(live)
            found = best_split(xn[:, columns], onehot[rows], self.criterion, self.min_samples_leaf)
            if found is None:
                continue
            column, cut, child_cost = found
            f = int(columns[column])
            nodes["feature"][node], nodes["threshold"][node], nodes["child_cost"][node] = f, float(cut), child_cost
            goes_left = xn[:, f] <= cut
            queue.append((rows[goes_left], node, True, depth + 1))
            queue.append((rows[~goes_left], node, False, depth + 1))
        return {name: np.array(values) for name, values in nodes.items()}

    def _set_nodes(self, grown: dict) -> None:
        """Store breadth-first node arrays in depth-first preorder (left child first)."""
        parent, is_left, depth = grown["parent"], grown["is_left"], grown["depth"]
        m = len(parent)
        left, right = np.full(m, -1), np.full(m, -1)
        kids = np.arange(1, m)
        left[parent[kids[is_left[1:]]]] = kids[is_left[1:]]
        right[parent[kids[~is_left[1:]]]] = kids[~is_left[1:]]
        bounds = np.searchsorted(depth, np.arange(depth[-1] + 2))  # breadth first: depth never decreases
        size = np.ones(m, dtype=np.intp)
        for level in range(depth[-1], 0, -1):
            at = slice(bounds[level], bounds[level + 1])
            np.add.at(size, parent[at], size[at])
        preorder = np.zeros(m, dtype=np.intp)
        for level in range(1, depth[-1] + 1):
            at = slice(bounds[level], bounds[level + 1])
            up = parent[at]
            preorder[at] = preorder[up] + 1 + np.where(is_left[at], 0, size[left[up]])
        order = np.empty(m, dtype=np.intp)
        order[preorder] = np.arange(m)
        self.feature_ = grown["feature"][order]
        self.threshold_ = grown["threshold"][order].astype(np.float64)
        self.children_left_ = np.where(left[order] >= 0, preorder[left[order]], -1)
        self.children_right_ = np.where(right[order] >= 0, preorder[right[order]], -1)
        value = grown["counts"][order]
        total = value.sum(axis=1, keepdims=True)  # 0 only where every row of the node has weight 0
        self.value_ = np.divide(value, total, out=np.zeros(value.shape), where=total > 0)
        self.depth_ = int(depth[-1])
        internal = self.feature_ >= 0
        gain = (grown["node_cost"] - grown["child_cost"])[order]
        importance = np.bincount(self.feature_[internal], weights=gain[internal], minlength=self.n_features_in_)
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


def fit_levelwise(trees: list, pre: Presorted, rows: list, weights: list, y: np.ndarray) -> None:
    """Fit each DecisionTree of `trees` (equal settings) on the rows rows[i] of the presorted data, weighted by
    weights[i] (whole numbers, aligned with rows[i]), growing all of them level by level together. Each tree equals
    its own fit(x[rows[i]], y[rows[i]], sample_weight=weights[i]); y holds the labels of all of pre's rows."""
    first = trees[0]
    if any(tree.settings() != first.settings() for tree in trees):
        raise UserError("trees grown together need equal settings")
    y = as_labels(y, pre.n)
    classes, codes = np.unique(y, return_inverse=True)
    weights = [first._weights(w, len(r)) for w, r in zip(weights, rows)]
    max_depth = np.inf if first.max_depth is None else first.max_depth
    grown = grow(pre, rows, weights, codes, len(classes), first.criterion, max_depth, first.min_samples_split,
                 first.min_samples_leaf, resolve_max_features(first.max_features, pre.n_features),
                 [np.random.default_rng(tree.random_state) for tree in trees])
    for tree, r, nodes in zip(trees, rows, grown):
        present = np.unique(codes[r])  # a class missing from these rows has zero weight everywhere: drop it
        nodes["counts"] = nodes["counts"][:, present]
        tree.classes_, tree.n_features_in_ = classes[present], pre.n_features
        tree._set_nodes(nodes)
