"""OneR, the one-attribute rule (Holte, "Very simple classification rules perform well on most commonly used
datasets", Machine Learning 11, 1993).

For every feature f the values are cut into bins; each bin b predicts its majority class
    rule_f(b) = argmax_k n_{f,b,k}
and OneR keeps the single feature whose rule makes the fewest training errors
    f* = argmin_f sum_b (n_{f,b} - max_k n_{f,b,k}).
Binning: a feature with at most `n_bins` distinct values gets one bin per value (Holte's nominal case); a numeric
one is cut at its quantiles into `n_bins` bins, a simpler stand-in for Holte's rule that each interval holds at
least `small` = 6 examples of its majority class. Bins never seen in training predict the overall majority class.
Class counts per (feature, bin) come from one `np.add.at` over all features.
"""

from __future__ import annotations

import numpy as np

from learnloop.scratch.checks import as_features, as_labels, require_fitted


def _edges(column: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges: midpoints between distinct values if there are few, else interior quantiles."""
    values = np.unique(column)
    if len(values) <= n_bins:
        return 0.5 * (values[1:] + values[:-1])
    return np.unique(np.quantile(column, np.linspace(0, 1, n_bins + 1)[1:-1]))


class OneR:
    def __init__(self, n_bins: int = 10):
        self.n_bins = n_bins

    def fit(self, x, y) -> OneR:
        x = as_features(x)
        y = as_labels(y, len(x))
        self.classes_, codes = np.unique(y, return_inverse=True)
        n, n_features = x.shape
        k = len(self.classes_)
        edges = [_edges(x[:, f], self.n_bins) for f in range(n_features)]
        bins = np.stack([np.searchsorted(e, x[:, f], side="left") for f, e in enumerate(edges)], axis=1)
        counts = np.zeros((n_features, self.n_bins + 1, k))
        np.add.at(counts, (np.arange(n_features)[None, :], bins, codes[:, None]), 1.0)
        errors = n - counts.max(axis=2).sum(axis=1)
        self.feature_ = int(np.argmin(errors))
        self.errors_ = errors
        self.edges_ = edges[self.feature_]
        majority = np.bincount(codes, minlength=k).argmax()
        chosen = counts[self.feature_]
        self.rule_ = np.where(chosen.sum(axis=1) > 0, chosen.argmax(axis=1), majority)
        self.n_features_in_ = n_features
        return self

    def predict(self, x) -> np.ndarray:
        require_fitted(self, "rule_")
        x = as_features(x, self.n_features_in_)
        return self.classes_[self.rule_[np.searchsorted(self.edges_, x[:, self.feature_], side="left")]]
