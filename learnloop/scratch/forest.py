"""Bagging (Breiman, "Bagging predictors", 1996) and random forests (Breiman, "Random forests", 2001).

Bagging: B estimators, each fitted on a bootstrap sample (n draws with replacement; the draw counts are passed as
sample weights, which is the same fit as repeating the rows), and soft-voted:
    p(k | x) = (1/B) sum_b p_b(k | x),        prediction argmax_k p(k | x).
Out-of-bag estimate: each row is scored only by the trees whose bootstrap missed it,
    p_oob(k | x_i) = mean over {b : i not in S_b} of p_b(k | x_i),   oob_score = accuracy of argmax p_oob
over the rows with at least one such tree.
A random forest is bagging of CART trees that draw `max_features` candidate features at each split
(sqrt(d) by default); it is `Bagging` with that tree factory and nothing else.
Fitting: the bootstraps are drawn first (counts, then a seed, per estimator, from one generator); CART trees on the
level-wise search (`learnloop.scratch.cart_levelwise`) then grow together, level by level, in batches sharing one
presorting of X, each tree equal to its own fit(X[drawn], y[drawn], sample_weight=counts[drawn]).
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.cart import DecisionTree, fit_levelwise
from learnloop.scratch.cart_levelwise import Presorted
from learnloop.scratch.checks import as_features, as_labels, require_fitted

MAX_BATCH_ENTRIES = 2**21  # entries of the trees grown together (larger batches lose more to cache misses)


class Bagging:
    """`make_estimator(seed)` returns an unfitted estimator with fit(X, y, sample_weight), predict_proba, classes_."""

    def __init__(self, make_estimator=None, n_estimators: int = 10, max_samples: float = 1.0,
                 oob_score: bool = False, random_state=None):
        if n_estimators < 1 or not 0 < max_samples <= 1:
            raise UserError("n_estimators must be >= 1 and max_samples in (0, 1]")
        self.make_estimator = make_estimator or (lambda seed: DecisionTree(random_state=seed))
        self.n_estimators, self.max_samples = n_estimators, max_samples
        self.oob_score, self.random_state = oob_score, random_state

    def fit(self, x, y) -> Bagging:
        x = as_features(x)
        y = as_labels(y, len(x))
        self.classes_ = np.unique(y)
        self.n_features_in_ = x.shape[1]
        rng = np.random.default_rng(self.random_state)
        n = len(x)
        n_draw = max(1, round(self.max_samples * n))
        bootstraps = []
        for _ in range(self.n_estimators):
            counts = np.bincount(rng.integers(0, n, n_draw), minlength=n)
            bootstraps.append((counts, self.make_estimator(int(rng.integers(2**31)))))
        _fit_all(x, y, bootstraps)
        self.estimators_ = [estimator for _, estimator in bootstraps]
        oob = np.zeros((n, len(self.classes_)))
        oob_votes = np.zeros(n)
        for counts, estimator in bootstraps if self.oob_score else ():
            missed = counts == 0
            if missed.any():
                oob[missed] += self._proba_of(estimator, x[missed])
                oob_votes[missed] += 1
        if self.oob_score:
            scored = oob_votes > 0
            if not scored.any():
                raise UserError("no out-of-bag rows: use more estimators or max_samples < 1")
            self.oob_decision_function_ = oob / np.maximum(oob_votes, 1)[:, None]
            predicted = self.classes_[self.oob_decision_function_[scored].argmax(axis=1)]
            self.oob_score_ = float((predicted == y[scored]).mean())
        return self

    def _proba_of(self, estimator, x: np.ndarray) -> np.ndarray:
        """The estimator's class probabilities in the columns of self.classes_ (a bootstrap may miss a class)."""
        proba = np.zeros((len(x), len(self.classes_)))
        proba[:, np.searchsorted(self.classes_, estimator.classes_)] = estimator.predict_proba(x)
        return proba

    def predict_proba(self, x) -> np.ndarray:
        require_fitted(self, "estimators_")
        x = as_features(x, self.n_features_in_)
        return sum(self._proba_of(e, x) for e in self.estimators_) / len(self.estimators_)

    def predict(self, x) -> np.ndarray:
        proba = self.predict_proba(x)
        return self.classes_[proba.argmax(axis=1)]

    @property
    def feature_importances_(self) -> np.ndarray:
        require_fitted(self, "estimators_")
        mean = np.mean([e.feature_importances_ for e in self.estimators_], axis=0)
        return mean / mean.sum() if mean.sum() > 0 else mean


def _fit_all(x: np.ndarray, y: np.ndarray, bootstraps: list) -> None:
    """Fit every (counts, estimator) on the rows with counts > 0, weighted by the counts. Consecutive DecisionTrees
    with equal settings and the level-wise search grow together, in batches of about MAX_BATCH_ENTRIES entries,
    on one presorting of x; any other estimator gets fit(x[drawn], y[drawn], sample_weight=counts[drawn])."""
    presorted, batch, size = None, [], 0
    for counts, estimator in bootstraps + [(None, None)]:
        levelwise = isinstance(estimator, DecisionTree) and estimator.uses_levelwise(counts, x.shape[1])
        if batch and (not levelwise or estimator.settings() != batch[0][1].settings() or size > MAX_BATCH_ENTRIES):
            fit_levelwise([e for _, e in batch], presorted, [np.flatnonzero(c) for c, _ in batch],
                          [c[c > 0] for c, _ in batch], y)
            batch, size = [], 0
        if levelwise:
            presorted = Presorted(x) if presorted is None else presorted
            batch.append((counts, estimator))
            size += np.count_nonzero(counts) * max(presorted.entries_per_row, 1.0)
        elif estimator is not None:
            drawn = counts > 0
            estimator.fit(x[drawn], y[drawn], sample_weight=counts[drawn])


class RandomForest(Bagging):
    def __init__(self, n_estimators: int = 100, criterion: str = "gini", max_depth: int | None = None,
                 min_samples_split: int = 2, min_samples_leaf: int = 1, max_features="sqrt",
                 max_samples: float = 1.0, oob_score: bool = False, random_state=None, split_search: str = "auto"):
        def make_tree(seed: int) -> DecisionTree:
            return DecisionTree(criterion=criterion, max_depth=max_depth, min_samples_split=min_samples_split,
                                min_samples_leaf=min_samples_leaf, max_features=max_features, random_state=seed,
                                split_search=split_search)

        make_tree(0)  # validates the tree settings now
        super().__init__(make_tree, n_estimators, max_samples, oob_score, random_state)
