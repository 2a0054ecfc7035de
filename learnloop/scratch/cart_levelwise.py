"""Level-wise exact CART growth, the vectorised split search of `learnloop.scratch.cart` (Breiman et al. 1984;
breadth-first growth on lists presorted once: Shafer, Agrawal & Mehta, "SPRINT", 1996; sibling subtraction: Ke et
al., "LightGBM", 2017).

Presorting (`Presorted`, once per data set, shared by all trees of a forest): feature f gets its sorted distinct
values v_f[0] < v_f[1] < ..., and value v_f[r] is bin g = offset_f + r; a bin per distinct value keeps every
threshold between distinct values, so the search is exact, not a binned approximation. The most frequent bin of
each feature, its mode, stays implicit; every other (row, bin) pair is an entry, stored row after row (CSR).
One-hot and other mostly-constant columns cost only their rare values.

Growing (`grow`): all nodes of one depth, of every tree being grown, are searched together with a fixed number of
array operations per level. Each searched node keeps its cells (distinct non-mode values with class weights and
row counts, `learnloop.scratch.cart_cells`). Of two siblings only the smaller is counted from its rows' entries,
into an array aligned with the parent's cells (a child's values are among its parent's); the larger is
    cells(larger child) = cells(parent) - cells(smaller child)
so a row is counted only at the levels where it falls on the smaller side. At search time each (node, feature)
gets its mode cell, c(t, mode_f) = c(t) - sum of its entry cells, cumulative sums over the cells give every
threshold's (c_L, c_R), and all cuts of the level are scored at once. With whole-number weights every one of these
sums is an exact integer in float64, so subtraction and any order of summation agree with the reference's
cumulative sums to the last bit: the level-wise tree is the per-node reference tree (same costs from
`weighted_impurity`, same tie rule, same `max_features` draws in the same breadth-first order).
"""

from __future__ import annotations

import numpy as np

from learnloop.scratch.cart_cells import LevelCells, _pack, _take, best_cuts, class_bits, column_sum
from learnloop.scratch.impurity import draw_features, weighted_impurity

MAX_TABLE = 2**24  # (split node, bin) slots of the parent-cell lookup table at most


class Presorted:
    """x (n, d) binned per feature: value (bin -> value), offset (feature -> first bin), rank (d, n: a row's rank
    within its feature), mode_bin, and the entries, entry_ptr / entry_bin: every row's non-mode bins (CSR)."""

    def __init__(self, x: np.ndarray):
        n, d = x.shape
        columns = [np.ascontiguousarray(x[:, f]) for f in range(d)]
        values, modes = [], []
        for column in columns:  # sorted distinct values and the most frequent one
            ordered = np.sort(column)
            starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
            values.append(_take(ordered, starts))
            modes.append(int(np.argmax(np.diff(np.append(starts, n)))))
        n_values = np.array([len(v) for v in values], dtype=np.intp)
        self.offset = np.concatenate([[0], np.cumsum(n_values)]).astype(np.intp)
        self.value = np.concatenate(values) if d else np.zeros(0)  # bin -> value, feature after feature
        self.feature_of_bin = np.repeat(np.arange(d), n_values)
        self.mode_bin = self.offset[:-1] + np.array(modes, dtype=np.intp)
        most = int(n_values.max(initial=1))
        self.rank = np.empty((d, n), dtype=np.uint8 if most <= 2**8 else np.uint16 if most <= 2**16 else np.intp)
        entry_rows = []
        for f, (column, vals) in enumerate(zip(columns, values)):  # rank of each value within its feature
            self.rank[f] = column > vals[0] if len(vals) == 2 else np.searchsorted(vals, column) if len(vals) > 2 else 0
            entry_rows.append(np.flatnonzero(self.rank[f] != modes[f]))
        per_row = np.bincount(np.concatenate(entry_rows), minlength=n) if d else np.zeros(n, dtype=np.intp)
        self.entry_ptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.intp)
        self.entry_bin = np.empty(self.entry_ptr[-1], dtype=np.intp)  # row after row, features in order
        self.entry_row = np.repeat(np.arange(n), per_row)
        fill = self.entry_ptr[:-1].copy()
        for f, rows in enumerate(entry_rows):
            self.entry_bin[_take(fill, rows)] = self.offset[f] + _take(self.rank[f], rows)
            fill[rows] += 1
        self.entry_len = per_row.astype(np.intp)
        self.n, self.n_features = n, d
        self.bin_bits = max(1, (len(self.value) - 1).bit_length())  # cell keys: node << bin_bits | bin
        self.entries_per_row = len(self.entry_bin) / max(n, 1)

    def entries(self, rows: np.ndarray, table: np.ndarray):
        """(table[e] for the entries e of rows, rows after rows; entries per row). table: one value per entry."""
        start, lengths = _take(self.entry_ptr, rows), _take(self.entry_len, rows)
        index = np.repeat(start - (np.cumsum(lengths) - lengths), lengths)
        index += np.arange(len(index))
        return _take(table, index), lengths


def grow(pre: Presorted, tree_rows: list, tree_weights: list, codes: np.ndarray, n_classes: int, criterion: str,
         max_depth: float, min_samples_split: int, min_samples_leaf: int, n_draw: int, rngs: list,
         max_table: int = MAX_TABLE) -> list[dict]:
    """Grow one tree per (rows, weights) of tree_rows, tree_weights (whole numbers), all level by level together.

    codes: class code of every row of the presorted data; rngs: one generator per tree; max_table caps the
    parent-cell lookup of `_child_cells` (larger levels match cells by key instead). Returns per tree its
    breadth-first node arrays: parent, is_left, depth, counts (class weights), feature (-1 at a leaf), threshold,
    node_cost W_t i(t) and child_cost W_L i(t_L) + W_R i(t_R)."""
    k, n_trees = n_classes, len(tree_rows)
    a_row = np.concatenate(tree_rows).astype(np.intp)
    a_w = np.concatenate(tree_weights).astype(np.float64)
    entry_class = (pre.entry_bin << class_bits(k)) | _take(codes, pre.entry_row)  # bin, class per entry
    a_node = np.repeat(np.arange(n_trees), [len(r) for r in tree_rows])

    def level_stats(counts, n_rows, depth: int):
        node_cost = weighted_impurity(counts, criterion)
        cand = ~((depth >= max_depth) | (n_rows < min_samples_split) | (n_rows < 2 * min_samples_leaf)
                 | (node_cost <= 1e-12 * counts.sum(axis=1)))
        return node_cost, cand

    counts = np.bincount(a_node * k + _take(codes, a_row), weights=a_w, minlength=n_trees * k).reshape(-1, k)
    n_rows = np.bincount(a_node, minlength=n_trees)
    node_cost, cand = level_stats(counts, n_rows, 0)
    at = np.flatnonzero(_take(cand, a_node))
    cells = LevelCells.count(pre, entry_class, _take(a_row, at), _take(a_node, at), np.where(cand, n_rows, 0),
                             _take(a_w, at), k)
    levels = []
    parent, is_left, tree, depth, first_id = np.full(n_trees, -1), np.zeros(n_trees, bool), np.arange(n_trees), 0, 0
    while True:
        n_level = len(parent)
        level = {"parent": parent, "is_left": is_left, "depth": np.full(n_level, depth), "counts": counts,
                 "feature": np.full(n_level, -1), "threshold": np.zeros(n_level), "node_cost": node_cost,
                 "child_cost": np.zeros(n_level), "tree": tree}
        levels.append(level)
        found = None
        if cand.any() and pre.n_features:
            found = _search_level(pre, cells, cand, counts, n_rows, tree, criterion, min_samples_leaf, n_draw, rngs)
        if found is None:
            break
        split, feature, threshold, child_cost, left_counts, left_rows, cut_bin = found  # split nodes, in order
        level["feature"][split], level["threshold"][split] = feature, threshold
        level["child_cost"][split] = child_cost
        child_of = np.full(n_level, -1, dtype=np.intp)  # split node number s gets children 2s (left), 2s + 1
        child_of[split] = 2 * np.arange(len(split))
        if len(split) < n_level:  # drop the rows of new leaves
            keep = np.flatnonzero(_take(child_of, a_node) >= 0)
            a_row, a_node, a_w = _take(a_row, keep), _take(a_node, keep), _take(a_w, keep)
        at = np.zeros(n_level, dtype=np.intp)  # rank of the row's value of the node's split feature: pre.rank[f, row]
        at[split] = feature * pre.n
        cut = np.zeros(n_level, dtype=pre.rank.dtype)  # the left side's highest rank
        cut[split] = cut_bin - pre.offset[feature]
        a_node = _take(child_of, a_node) + (_take(pre.rank.ravel(), _take(at, a_node) + a_row) > _take(cut, a_node))
        counts = np.stack([left_counts, counts[split] - left_counts], axis=1).reshape(-1, k)  # exact integers
        n_rows = np.stack([left_rows, n_rows[split] - left_rows], axis=1).ravel()
        node_cost, cand = level_stats(counts, n_rows, depth + 1)
        cells = _child_cells(pre, entry_class, cells, child_of, a_row, a_node, a_w, n_rows, cand, k, max_table)
        parent = first_id + np.repeat(split, 2)
        is_left = np.tile([True, False], len(split))
        tree = np.repeat(tree[split], 2)
        first_id += n_level
        depth += 1
    nodes = {name: np.concatenate([level[name] for level in levels]) for name in levels[0]}
    tree = nodes.pop("tree")
    order = np.argsort(tree, kind="stable")  # each tree's nodes, still breadth first
    bounds = np.concatenate([[0], np.cumsum(np.bincount(tree, minlength=n_trees))])
    local = np.empty(len(order), dtype=np.intp)
    out = []
    for t in range(n_trees):
        mine = order[bounds[t]:bounds[t + 1]]
        local[mine] = np.arange(len(mine))
        tree_nodes = {name: values[mine] for name, values in nodes.items()}
        tree_nodes["parent"] = np.where(tree_nodes["parent"] >= 0, local[np.maximum(tree_nodes["parent"], 0)], -1)
        out.append(tree_nodes)
    return out


def _child_cells(pre, entry_class, cells: LevelCells, child_of, a_row, a_node, a_w, n_rows, cand, k, max_table):
    """Entry cells of the next level's nodes `cand` (children 2s, 2s + 1 of split node s): the smaller sibling is
    counted from its rows' entries, into an array aligned with its parent's cells (a child's values are among its
    parent's), and the larger sibling is the parent minus the smaller, cell by cell."""
    n_split, bits, cbits = len(n_rows) // 2, pre.bin_bits, class_bits(k)
    small = 2 * np.arange(n_split) + (n_rows[1::2] < n_rows[0::2])  # the smaller child (left on a tie)
    large = small ^ 1
    need_large = cand[large]
    counted = cand[small] | need_large
    if n_split * len(pre.value) > max_table:  # the parent-cell table would be too large: count and subtract by key
        return _child_cells_by_key(pre, entry_class, cells, child_of, a_row, a_node, a_w, n_rows, cand, k)
    split_of = np.where(child_of >= 0, child_of >> 1, n_split)  # level node -> its split number (n_split: none)
    cell_split = _take(split_of, cells.key >> bits)
    mine = np.flatnonzero(_take(np.append(counted, False), cell_split))  # cells of the parents counted now
    p_split, p_bin = _take(cell_split, mine), _take(cells.key, mine) & ((1 << bits) - 1)
    n_bins = len(pre.value)
    table = np.empty(n_split * n_bins, dtype=np.int32)  # (split number, bin) -> index of that parent cell
    table[p_split * n_bins + p_bin] = np.arange(len(mine), dtype=np.int32)
    is_counted = np.zeros(len(n_rows), dtype=bool)
    is_counted[_take(small, np.flatnonzero(counted))] = True
    at = np.flatnonzero(_take(is_counted, a_node))
    e_class, lengths = pre.entries(_take(a_row, at), entry_class)
    cell = _take(table, np.repeat((_take(a_node, at) >> 1) * n_bins, lengths) + (e_class >> cbits)).astype(np.intp)
    packed, scale = _pack(_take(a_w, at), pre.n)
    key = (cell << cbits) | (e_class & ((1 << cbits) - 1))
    hist = np.bincount(key, weights=np.repeat(packed, lengths), minlength=len(mine) << cbits).reshape(-1, 1 << cbits)
    if scale:  # class weights above, row counts below (see _pack)
        small_cls = np.floor(hist / scale)
        small_rows = column_sum(hist - small_cls * scale).astype(np.intp)
    else:
        small_cls = hist
        small_rows = column_sum(np.bincount(key, minlength=len(mine) << cbits).reshape(-1, 1 << cbits))
    small_cls = small_cls[:, :k]
    p_cls, p_rows = _take(cells.cls, mine), _take(cells.rows, mine)
    parts = []
    for child, keep, cls, rows in ((small, cand[small], small_cls, small_rows),
                                   (large, need_large, p_cls - small_cls, p_rows - small_rows)):
        kept = np.flatnonzero((rows > 0) & _take(keep, p_split))
        key = (_take(child, _take(p_split, kept)) << bits) | _take(p_bin, kept)
        parts.append(LevelCells(key, _take(cls, kept), _take(rows, kept), bits))
    return LevelCells.merge(*parts)


def _child_cells_by_key(pre, entry_class, cells: LevelCells, child_of, a_row, a_node, a_w, n_rows, cand, k):
    """_child_cells for huge levels: count the smaller siblings on their own, subtract by matching keys."""
    small = np.arange(0, len(n_rows), 2) + (n_rows[1::2] < n_rows[0::2])
    large = small ^ 1
    need_large = cand[large]
    need_small = np.zeros(len(n_rows), dtype=bool)
    need_small[small] = cand[small] | need_large
    counted = np.flatnonzero(need_small[a_node])
    small_cells = LevelCells.count(pre, entry_class, _take(a_row, counted), _take(a_node, counted),
                                   np.where(need_small, n_rows, 0), _take(a_w, counted), k)
    large_of = np.full(len(child_of), -1)  # parent node -> its larger child, where that child is searched
    has_parent = child_of >= 0
    large_of[has_parent] = np.where(need_large[child_of[has_parent] // 2], large[child_of[has_parent] // 2], -1)
    node = cells.key >> cells.bits
    parent_cells = cells.take(np.flatnonzero(large_of[node] >= 0), large_of)
    small_node = small_cells.key >> small_cells.bits
    to_subtract = np.flatnonzero(need_large[small_node // 2])
    large_cells = parent_cells.subtract(small_cells.take(to_subtract, np.arange(len(n_rows)) ^ 1))
    return LevelCells.merge(small_cells.take(np.flatnonzero(cand[small_node])), large_cells)


def _search_level(pre, cells, cand, counts, n_rows, tree, criterion, min_leaf, n_draw, rngs):
    """(split nodes, feature, threshold, child cost, left class weights, left rows, left top bin) of the best cut
    of every candidate node that has one, in level order."""
    d = pre.n_features
    segs = cells.segments(pre, cand, n_rows)
    live = np.flatnonzero(segs.live)
    if n_draw < d:
        node, feature = np.divmod(_take(segs.seg, live), d)
        cand_nodes = np.flatnonzero(cand)
        per_tree = np.bincount(tree[cand_nodes], minlength=len(rngs))  # candidates are grouped by tree
        keys = np.concatenate([rngs[t].random((m, d)) for t, m in enumerate(per_tree) if m])
        row = _take(np.cumsum(cand) - 1, node)  # the candidate's row in the (candidates, d) keys
        crowded = np.flatnonzero(np.bincount(row, minlength=len(keys)) > n_draw)  # others search all live ones
        if len(crowded):
            slot = np.full(len(keys), -1)
            slot[crowded] = np.arange(len(crowded))
            sub = np.flatnonzero(_take(slot, row) >= 0)
            at = _take(slot, _take(row, sub)) * d + _take(feature, sub)
            mask = np.zeros(len(crowded) * d, dtype=bool)
            mask[at] = True
            keep = np.ones(len(live), dtype=bool)
            keep[sub] = _take(draw_features(_take(keys, crowded), mask.reshape(-1, d), n_draw).ravel(), at)
            live = _take(live, np.flatnonzero(keep))
    return best_cuts(pre, cells.search_cells(pre, segs, live, counts), counts, n_rows, criterion, min_leaf)
