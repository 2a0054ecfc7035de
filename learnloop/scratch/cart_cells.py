"""Cells and best cuts of the level-wise CART split search (`learnloop.scratch.cart_levelwise`; criterion:
Breiman et al. 1984; sibling subtraction: Ke et al., "LightGBM", 2017).

A cell is one distinct value v of feature f among the rows of node t, with its class weights c(t, f, v) and its
row count. A level keeps, for each searched node, its entry cells (the values that are not the mode of their
feature), in `LevelCells`, sorted by key = node << bin_bits | bin. Counting cells from rows (`LevelCells.count`,
for the roots, and for huge levels) picks per node: over all entries at once for a node holding a large share of
the rows, a dense histogram over all bins for a large node, a sort of its entries for a small one (runs of equal
keys are cells). One weighted bincount carries both class weights and row counts (weight w * 2**r + 1, exact
while sums stay below 2**53). `LevelCells.subtract` gives the larger of two siblings as cells(parent) -
cells(smaller sibling), matched by key.
At search time the mode cell of (t, f) is merged in, c(t, mode_f) = c(t) - sum of the entry cells of (t, f), and
`best_cuts` takes cumulative class weights over the cells of every (node, feature): the cut after each cell has
left side c_L and right side c(t) - c_L, and all cuts are scored at once,
    cost = W_L i(t_L) + W_R i(t_R),
keeping per node the least cost, then the fewest rows on the left, then the lowest feature index. With
whole-number weights every one of these sums is an exact integer in float64, so no order of summation matters.
(Gathers use np.take and merges a stable sort of two sorted runs: the same values as fancy indexing, faster.)
"""

from __future__ import annotations

import numpy as np

from learnloop.scratch.impurity import weighted_impurity

SORT_COST = 2.0  # cost of sorting an entry, in dense histogram cells (tuned on Adult; any value gives equal trees)
MAX_DENSE_CELLS = 2**22  # dense histogram cells per level at most
FULL_SHARE = 4  # a node with at least 1 / FULL_SHARE of all rows is counted over all entries


def class_bits(k: int) -> int:
    return max(1, (int(k) - 1).bit_length())


def column_sum(a: np.ndarray) -> np.ndarray:
    """a.sum(axis=1) for a few columns, column by column (faster than numpy's short-axis reduction; with whole
    numbers the same values)."""
    total = a[:, 0].copy()
    for j in range(1, a.shape[1]):
        total += a[:, j]
    return total


def _take(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take(a, index, axis=0)


def _pack(w: np.ndarray, n: int):
    """(w * 2**r + 1, 2**r): one float64 sum then carries the weights above r bits and the row count below
    (exact while every sum stays below 2**53), or (w, 0) when the weights are too large for that."""
    scale = 2.0 ** max(1, n.bit_length())
    if float(w.sum()) * scale < 2.0**52:
        return w * scale + 1.0, scale
    return w, 0.0


def _run_starts(key: np.ndarray) -> np.ndarray:
    flags = np.ones(len(key), dtype=bool)
    np.not_equal(key[1:], key[:-1], out=flags[1:])
    return flags


def _merge_order(key_a: np.ndarray, key_b: np.ndarray) -> np.ndarray:
    """Source index (into a then b concatenated) of each item of the merge of two sorted key arrays: a stable
    sort of two sorted runs, which timsort merges in one pass."""
    return np.argsort(np.concatenate([key_a, key_b]), kind="stable")


def _merged(source: np.ndarray, *pairs):
    return [_take(np.concatenate([a, b]), source) for a, b in pairs]


class Cells:
    """Parallel arrays, one item per cell, sorted by (node, feature, value): node, feature, bin, cls (N, K), rows."""

    def __init__(self, node, feature, bin_, cls, rows):
        self.node, self.feature, self.bin, self.cls, self.rows = node, feature, bin_, cls, rows


class LevelCells:
    """Entry cells of some nodes of a level, sorted by key = node << bits | bin (bits: pre.bin_bits)."""

    def __init__(self, key, cls, rows, bits):
        self.key, self.cls, self.rows, self.bits = key, cls, rows, bits

    @classmethod
    def count(cls, pre, entry_class, rows, node_of_row, n_rows, w, k: int) -> LevelCells:
        """Entry cells of the nodes of rows (node_of_row, w: label and weight of each row; n_rows: rows per label,
        0 for the labels not counted here).

        entry_class = entry bin << class_bits | class code of the entry's row. Per node, whichever touches fewer
        array cells: a dense histogram (2**(bin_bits + class_bits) cells) or a sort of its entries (rows * entries
        per row * SORT_COST); a node with a quarter of all rows or more is counted over all entries at once."""
        per_node = 1 << (pre.bin_bits + class_bits(k))
        dense = (n_rows > 0) & (n_rows * pre.entries_per_row * SORT_COST >= per_node)
        if dense.sum() * per_node > MAX_DENSE_CELLS:  # the largest nodes that fit
            dense &= n_rows > np.sort(n_rows)[-max(1, MAX_DENSE_CELLS // per_node) - 1]
        full = dense & (FULL_SHARE * n_rows >= pre.n)
        how = _take(dense.astype(np.int8) + full, node_of_row)  # 0 sort, 1 dense histogram, 2 over all entries
        parts = []
        for code, make, nodes in ((2, cls._full, full), (1, cls._dense, dense & ~full), (0, cls._sorted, None)):
            part = np.flatnonzero(how == code)
            if len(part):
                parts.append(make(pre, entry_class, _take(rows, part), _take(node_of_row, part), nodes,
                                  _take(w, part), k))
        while len(parts) > 1:
            parts = [cls.merge(parts[0], parts[1])] + parts[2:]
        return parts[0] if parts else cls.empty(pre, k)

    @classmethod
    def empty(cls, pre, k: int) -> LevelCells:
        return cls(np.zeros(0, dtype=np.intp), np.zeros((0, k)), np.zeros(0, dtype=np.intp), pre.bin_bits)

    @classmethod
    def _dense(cls, pre, entry_class, rows, node_of_row, nodes, w, k):
        """One weighted bincount over (node, bin, class)."""
        bits, cbits = pre.bin_bits, class_bits(k)
        e_class, lengths = pre.entries(rows, entry_class)
        key = np.repeat(_take(np.cumsum(nodes) - 1, node_of_row) << (bits + cbits), lengths) | e_class
        packed, scale = _pack(w, pre.n)
        size = int(nodes.sum()) << (bits + cbits)
        hist = np.bincount(key, weights=np.repeat(packed, lengths), minlength=size)
        rows_hist = None if scale else np.bincount(key, minlength=size)
        return cls._read(np.flatnonzero(nodes), hist, rows_hist, scale, bits, cbits, k)

    @classmethod
    def _full(cls, pre, entry_class, rows, node_of_row, nodes, w, k):
        """Per node, one weighted bincount over all entries (weight 0 off the node): no gather by row."""
        order = np.argsort(node_of_row, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(node_of_row, minlength=len(nodes)))])
        packed, scale = _pack(w, pre.n)
        size = 1 << (pre.bin_bits + class_bits(k))
        labels = np.flatnonzero(nodes)
        hist, rows_hist = np.empty((len(labels), size)), None if scale else np.empty((len(labels), size))
        row_weight = np.zeros(pre.n)
        for i, label in enumerate(labels):
            mine = _take(order, np.arange(bounds[label], bounds[label + 1]))
            row_weight[_take(rows, mine)] = _take(packed, mine)
            hist[i] = np.bincount(entry_class, weights=_take(row_weight, pre.entry_row), minlength=size)
            if not scale:
                row_weight[_take(rows, mine)] = 1.0
                rows_hist[i] = np.bincount(entry_class, weights=_take(row_weight, pre.entry_row), minlength=size)
            row_weight[_take(rows, mine)] = 0.0
        return cls._read(labels, hist.ravel(), None if scale else rows_hist.ravel(), scale, pre.bin_bits,
                         class_bits(k), k)

    @classmethod
    def _read(cls, labels, hist, rows_hist, scale, bits, cbits, k):
        """Cells from histograms over (slot, bin, class): packed weights (scale = 2**r) or separate row counts."""
        if scale:
            by_bin = hist.reshape(-1, 1 << cbits)
            present = np.flatnonzero(column_sum(by_bin))
            packed = _take(by_bin, present)[:, :k]
            weights = np.floor(packed / scale)
            n_rows = column_sum(packed - weights * scale).astype(np.intp)
        else:
            by_bin = column_sum(rows_hist.reshape(-1, 1 << cbits))
            present = np.flatnonzero(by_bin)
            weights, n_rows = _take(hist.reshape(-1, 1 << cbits), present)[:, :k], _take(by_bin, present)
        slot, bin_ = present >> bits, present & ((1 << bits) - 1)
        return cls((_take(labels, slot) << bits) | bin_, weights, n_rows.astype(np.intp), bits)

    @classmethod
    def _sorted(cls, pre, entry_class, rows, node_of_row, nodes, w, k):
        """Sort the keys (node, bin, class, weight) packed in one int64 (weights are whole numbers here), so runs
        of equal (node, bin) are the cells and their weights ride along without a gather."""
        bits, cbits = pre.bin_bits, class_bits(k)
        wbits = max(1, int(w.max(initial=0)).bit_length())
        e_class, lengths = pre.entries(rows, entry_class)
        if (int(node_of_row.max(initial=0)) + 1) << (bits + cbits + wbits) >= 2**62:
            key = np.repeat(node_of_row << (bits + cbits), lengths) | e_class
            order = np.argsort(key)
            key, w = _take(key, order), _take(np.repeat(w, lengths), order)
        else:
            row_key = (node_of_row << (bits + cbits + wbits)) | w.astype(np.int64)
            packed = np.sort(np.repeat(row_key, lengths) | (e_class << wbits))
            key, w = packed >> wbits, packed & ((1 << wbits) - 1)
        return cls.from_sorted(key, w, bits, cbits, k)

    @classmethod
    def from_sorted(cls, key, w, bits: int, cbits: int, k: int) -> LevelCells:
        """Cells of entries sorted by key = node << (bits + cbits) | bin << cbits | class, with weights w."""
        cell_key = key >> cbits
        first = _run_starts(cell_key)
        starts = np.flatnonzero(first)
        weights = np.bincount((np.cumsum(first) - 1) * k + (key & ((1 << cbits) - 1)), weights=w,
                              minlength=len(starts) * k).reshape(-1, k)
        return cls(_take(cell_key, starts), weights, np.diff(np.append(starts, len(key))), bits)

    def take(self, keep: np.ndarray, relabel: np.ndarray | None = None) -> LevelCells:
        """The cells `keep` (sorted indices), optionally with node t renamed relabel[t] (order kept)."""
        key = _take(self.key, keep)
        if relabel is not None:
            key = (_take(relabel, key >> self.bits) << self.bits) | (key & ((1 << self.bits) - 1))
        return LevelCells(key, _take(self.cls, keep), _take(self.rows, keep), self.bits)

    def subtract(self, smaller: LevelCells) -> LevelCells:
        """self - smaller, where every key of smaller is in self (a child's values are its parent's)."""
        at = np.searchsorted(self.key, smaller.key)
        k = self.cls.shape[1]
        cls, rows = self.cls.copy(), self.rows.copy()
        flat = (at[:, None] * k + np.arange(k)).ravel()
        cls.reshape(-1)[flat] -= smaller.cls.reshape(-1)
        rows[at] -= smaller.rows
        keep = np.flatnonzero(rows)
        return LevelCells(_take(self.key, keep), _take(cls, keep), _take(rows, keep), self.bits)

    @staticmethod
    def merge(a: LevelCells, b: LevelCells) -> LevelCells:
        source = _merge_order(a.key, b.key)
        key, cls, rows = _merged(source, (a.key, b.key), (a.cls, b.cls), (a.rows, b.rows))
        return LevelCells(key, cls, rows, a.bits)

    def segments(self, pre, cand: np.ndarray, n_rows: np.ndarray) -> Segments:
        """The (node, feature) pairs that have cells; cells are of candidate nodes only."""
        d = pre.n_features
        node, bin_ = self.key >> self.bits, self.key & ((1 << self.bits) - 1)
        seg = node * d + _take(pre.feature_of_bin, bin_)
        first = np.flatnonzero(_run_starts(seg))
        seg = _take(seg, first)
        n_cells = np.diff(np.append(first, len(self.key)))
        mode_rows = _take(n_rows, seg // d) - (np.add.reduceat(self.rows, first) if len(first) else first)
        return Segments(seg, first, n_cells, mode_rows, n_cells + (mode_rows > 0) >= 2)

    def search_cells(self, pre, segs: Segments, chosen: np.ndarray, counts) -> Cells:
        """Cells of the chosen segments (indices into segs; live ones), the mode cells merged in, for `best_cuts`.

        A live segment with rows at the mode also has entry cells, so every chosen segment has cells here."""
        d, k, bits = pre.n_features, counts.shape[1], self.bits
        lengths = _take(segs.n_cells, chosen)
        start = _take(segs.first, chosen)
        keep = np.repeat(start - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
        key, cls, rows = _take(self.key, keep), _take(self.cls, keep), _take(self.rows, keep)
        seg, mode_rows = _take(segs.seg, chosen), _take(segs.mode_rows, chosen)
        with_mode = np.flatnonzero(mode_rows > 0)
        starts = np.cumsum(lengths) - lengths
        seg_cls = _take(np.add.reduceat(cls, starts, axis=0), with_mode) if len(starts) else np.zeros((0, k))
        m_node = _take(seg, with_mode) // d
        m_key = (m_node << bits) | _take(pre.mode_bin, _take(seg, with_mode) - m_node * d)
        source = _merge_order(key, m_key)
        key, cls, rows = _merged(source, (key, m_key), (cls, _take(counts, m_node) - seg_cls),
                                 (rows, _take(mode_rows, with_mode)))
        bin_ = key & ((1 << bits) - 1)
        return Cells(key >> bits, _take(pre.feature_of_bin, bin_), bin_, cls, rows)


class Segments:
    """Per (node, feature) pair with cells, in cell order: seg = node * d + feature, its first cell, its number
    of cells, its rows at the feature's mode, and live: the feature takes two or more values in the node."""

    def __init__(self, seg, first, n_cells, mode_rows, live):
        self.seg, self.first, self.n_cells, self.mode_rows, self.live = seg, first, n_cells, mode_rows, live


def best_cuts(pre, cells: Cells, counts, n_rows, criterion: str, min_leaf: int):
    """(nodes, feature, threshold, child cost, left class weights, left rows, bin of the left side's highest value)
    of the best cut of every node that has a valid one."""
    if len(cells.node) == 0:
        return None
    n, k = len(cells.node), counts.shape[1]
    seg_first = np.ones(n, dtype=bool)
    seg_first[1:] = (cells.node[1:] != cells.node[:-1]) | (cells.feature[1:] != cells.feature[:-1])
    last = np.append(seg_first[1:], True)
    start = np.maximum.accumulate(np.where(seg_first, np.arange(n), 0))
    cum = np.zeros((n + 1, k))
    np.cumsum(cells.cls, axis=0, out=cum[1:])
    cum_rows = np.zeros(n + 1, dtype=np.intp)
    np.cumsum(cells.rows, out=cum_rows[1:])
    left_rows = cum_rows[1:] - _take(cum_rows, start)
    valid = np.flatnonzero(~last & (left_rows >= min_leaf) & (_take(n_rows, cells.node) - left_rows >= min_leaf))
    if len(valid) == 0:
        return None
    node = _take(cells.node, valid)
    left = _take(cum, valid + 1) - _take(cum, _take(start, valid))
    right = _take(counts, node) - left
    cost = (weighted_impurity(left, criterion, column_sum(left))
            + weighted_impurity(right, criterion, column_sum(right)))
    group_first = _run_starts(node)
    group = np.cumsum(group_first) - 1
    best = np.minimum.reduceat(cost, np.flatnonzero(group_first))
    at_best = np.flatnonzero(cost == _take(best, group))
    cell_best = _take(valid, at_best)
    tie = _take(left_rows, cell_best) * pre.n_features + _take(cells.feature, cell_best)
    tie_group = _take(group, at_best)
    least = np.minimum.reduceat(tie, np.flatnonzero(_run_starts(tie_group)))
    pick = _take(at_best, np.flatnonzero(tie == _take(least, tie_group)))
    cell = _take(valid, pick)
    low, high = _take(pre.value, _take(cells.bin, cell)), _take(pre.value, _take(cells.bin, cell + 1))
    threshold = 0.5 * (low + high)
    threshold = np.where(threshold >= high, low, threshold)  # the midpoint rounded up to the upper value
    return (_take(cells.node, cell), _take(cells.feature, cell), threshold, _take(cost, pick), _take(left, pick),
            _take(left_rows, cell), _take(cells.bin, cell))
