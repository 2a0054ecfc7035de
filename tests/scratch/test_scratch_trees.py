"""OneR, CART, bagging and random forests: split search is exact, limits hold, accuracy is scikit-learn's."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import BaggingClassifier, RandomForestClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

from learnloop.errors import UserError
from learnloop.scratch.cart import DecisionTree, best_split, weighted_impurity
from learnloop.scratch.forest import Bagging, RandomForest
from learnloop.scratch.oner import OneR

X, Y = load_breast_cancer(return_X_y=True)


def _cv_accuracy(make, folds=4):
    scores = []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(X, Y):
        scores.append((make().fit(X[train], Y[train]).predict(X[test]) == Y[test]).mean())
    return float(np.mean(scores))


def test_impurities():
    assert weighted_impurity(np.array([5.0, 5.0]), "gini") == pytest.approx(10 * 0.5)
    assert weighted_impurity(np.array([2.0, 2.0, 4.0]), "entropy") == pytest.approx(8 * 1.5)
    assert weighted_impurity(np.array([7.0, 0.0]), "gini") == 0.0
    assert weighted_impurity(np.array([0.0, 0.0]), "entropy") == 0.0


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 30), criterion=st.sampled_from(["gini", "entropy"]),
       min_leaf=st.integers(1, 4))
def test_sorted_cumulative_split_search_equals_brute_force(seed, n, criterion, min_leaf):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=(n, 3)).astype(float)  # ties on purpose
    y = np.eye(3)[rng.integers(0, 3, size=n)] * rng.integers(1, 4, size=(n, 1))  # weighted one-hot
    best = np.inf
    for f in range(3):
        for s in np.unique(x[:, f])[:-1]:
            left = x[:, f] <= s
            if left.sum() >= min_leaf and (~left).sum() >= min_leaf:
                cost = weighted_impurity(y[left].sum(0), criterion) + weighted_impurity(y[~left].sum(0), criterion)
                best = min(best, cost)
    found = best_split(x, y, criterion, min_leaf)
    if best == np.inf:
        assert found is None
    else:
        f, threshold, cost = found
        assert cost == pytest.approx(best)
        left = x[:, f] <= threshold
        assert weighted_impurity(y[left].sum(0), criterion) + weighted_impurity(y[~left].sum(0), criterion) \
            == pytest.approx(cost)


@pytest.mark.parametrize("criterion", ["gini", "entropy"])
@pytest.mark.parametrize("depth", [1, 2])
def test_shallow_trees_equal_sklearn(criterion, depth):
    """sklearn breaks exact ties between features by its random feature order, so one of a few seeds must agree."""
    ours = DecisionTree(criterion, max_depth=depth).fit(X, Y)

    def same(ref):
        return (np.array_equal(ours.feature_ >= 0, ref.tree_.feature >= 0)
                and np.allclose(ours.feature_importances_, ref.feature_importances_, atol=1e-12)
                and np.allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-12))

    refs = [DecisionTreeClassifier(criterion=criterion, max_depth=depth, random_state=s).fit(X, Y) for s in range(5)]
    assert ours.feature_[0] == refs[0].tree_.feature[0]
    assert ours.threshold_[0] == pytest.approx(refs[0].tree_.threshold[0])
    assert any(same(ref) for ref in refs)


@pytest.mark.parametrize("criterion", ["gini", "entropy"])
@pytest.mark.parametrize("depth", [4, None])
def test_tree_accuracy_matches_sklearn_on_breast_cancer(criterion, depth):
    ours = _cv_accuracy(lambda: DecisionTree(criterion, max_depth=depth))
    ref = _cv_accuracy(lambda: DecisionTreeClassifier(criterion=criterion, max_depth=depth, random_state=0))
    assert abs(ours - ref) <= 0.02, (ours, ref)
    assert ours >= 0.9


def test_limits_hold():
    tree = DecisionTree(max_depth=3, min_samples_leaf=7).fit(X, Y)
    assert tree.depth_ <= 3
    assert np.bincount(tree.apply(X)).max() > 0
    leaf_sizes = np.bincount(tree.apply(X))
    assert leaf_sizes[leaf_sizes > 0].min() >= 7
    big = DecisionTree(min_samples_split=60).fit(X, Y)
    internal_sizes = [np.isin(big.apply(X), _subtree(big, node)).sum() for node in np.flatnonzero(big.feature_ >= 0)]
    assert min(internal_sizes) >= 60
    assert DecisionTree().fit(X, Y).predict(X).tolist() == Y.tolist()  # a full tree fits its training data


def _subtree(tree, node):
    nodes, stack = [], [node]
    while stack:
        k = stack.pop()
        nodes.append(k)
        if tree.feature_[k] >= 0:
            stack += [tree.children_left_[k], tree.children_right_[k]]
    return nodes


def test_integer_sample_weights_equal_repeated_rows():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 4, size=len(X))
    weighted = DecisionTree(max_depth=5).fit(X, Y, sample_weight=counts)
    repeated = DecisionTree(max_depth=5).fit(np.repeat(X, counts, axis=0), np.repeat(Y, counts))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X))


def test_oner_picks_the_rule_with_fewest_errors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    x[:, 2] = rng.integers(0, 3, size=300)
    y = np.array(["a", "b", "c"])[x[:, 2].astype(int)]
    rule = OneR().fit(x, y)
    assert rule.feature_ == 2 and (rule.predict(x) == y).all()
    model = OneR().fit(X, Y)
    assert model.errors_[model.feature_] == model.errors_.min()
    assert (model.predict(X) != Y).sum() == model.errors_.min()
    assert _cv_accuracy(OneR) >= 0.85


def test_random_forest_matches_sklearn_on_breast_cancer():
    ours = _cv_accuracy(lambda: RandomForest(30, random_state=0))
    ref = _cv_accuracy(lambda: RandomForestClassifier(30, random_state=0))
    assert abs(ours - ref) <= 0.02, (ours, ref)
    forest = RandomForest(60, oob_score=True, random_state=0).fit(X, Y)
    ref_forest = RandomForestClassifier(60, oob_score=True, random_state=0).fit(X, Y)
    assert abs(forest.oob_score_ - ref_forest.oob_score_) <= 0.02
    assert forest.feature_importances_.sum() == pytest.approx(1.0)
    assert np.argmax(forest.feature_importances_) in np.argsort(ref_forest.feature_importances_)[-5:]


def test_bagging_matches_sklearn_bagging_of_trees():
    ours = _cv_accuracy(lambda: Bagging(n_estimators=20, random_state=0))
    ref = _cv_accuracy(lambda: BaggingClassifier(DecisionTreeClassifier(), n_estimators=20, random_state=0))
    assert abs(ours - ref) <= 0.02, (ours, ref)


def test_forest_handles_a_class_missing_from_a_bootstrap():
    x = np.vstack([np.zeros((40, 1)), np.ones((1, 1))])
    y = np.array([0] * 40 + [1])
    forest = Bagging(n_estimators=8, random_state=0).fit(x, y)
    assert forest.predict_proba(x).shape == (41, 2)


def test_errors():
    for model in (DecisionTree(), OneR(), RandomForest(3)):
        with pytest.raises(UserError, match="not fitted"):
            model.predict(X)
    tree = DecisionTree().fit(X, Y)
    with pytest.raises(UserError, match="features"):
        tree.predict(X[:, :5])
    with pytest.raises(UserError, match="criterion"):
        DecisionTree(criterion="mse")
    with pytest.raises(UserError, match="max_features"):
        RandomForest(3, max_features="all").fit(X, Y)
    with pytest.raises(UserError, match="NaN"):
        DecisionTree().fit(np.array([[np.nan]]), [0])


# ---- level-wise split search (learnloop.scratch.cart_levelwise): equal to the per-node reference ----

def _same_tree(a, b):
    assert np.array_equal(a.classes_, b.classes_)
    for name in ("feature_", "threshold_", "children_left_", "children_right_"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    np.testing.assert_array_equal(a.value_, b.value_)
    np.testing.assert_allclose(a.feature_importances_, b.feature_importances_, rtol=1e-12, atol=1e-15)
    assert a.depth_ == b.depth_


def _tied_data(seed, n, d):
    """Few distinct values per column (ties everywhere), one column continuous, one near-constant."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, rng.integers(2, 7), size=(n, d)).astype(float)
    x[:, 0] = rng.normal(size=n).round(1)
    if d > 2:
        x[:, 2] = rng.random(n) < 0.1
    y = rng.integers(0, rng.integers(2, 4), size=n)
    return x, y


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 150), d=st.integers(1, 6),
       criterion=st.sampled_from(["gini", "entropy"]), min_leaf=st.integers(1, 4), min_split=st.integers(2, 12),
       depth=st.sampled_from([None, 1, 3]), max_features=st.sampled_from([None, 1, 2, "sqrt"]),
       weighted=st.booleans())
def test_levelwise_tree_equals_reference_tree(seed, n, d, criterion, min_leaf, min_split, depth, max_features,
                                              weighted):
    x, y = _tied_data(seed, n, d)
    w = np.random.default_rng(seed + 1).integers(0, 4, size=n).astype(float) if weighted else None
    kw = dict(criterion=criterion, max_depth=depth, min_samples_leaf=min_leaf, min_samples_split=min_split,
              max_features=max_features, random_state=seed)
    ref = DecisionTree(split_search="reference", **kw).fit(x, y, sample_weight=w)
    _same_tree(DecisionTree(split_search="levelwise", **kw).fit(x, y, sample_weight=w), ref)
    _same_tree(DecisionTree(**kw).fit(x, y, sample_weight=w), ref)


@pytest.mark.parametrize("criterion", ["gini", "entropy"])
def test_levelwise_equals_reference_on_breast_cancer(criterion):
    for kw in ({}, {"max_depth": 3}, {"min_samples_leaf": 7}, {"max_features": "sqrt", "random_state": 3}):
        ref = DecisionTree(criterion, split_search="reference", **kw).fit(X, Y)
        _same_tree(DecisionTree(criterion, split_search="levelwise", **kw).fit(X, Y), ref)


def test_tie_rule_fewest_rows_left_then_lowest_feature():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 1, 1, 0])  # cuts after 1 and after 3 rows cost the same: the 1-row cut wins
    for search in ("reference", "levelwise"):
        assert DecisionTree(max_depth=1, split_search=search).fit(x, y).threshold_[0] == 0.5
    a = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=float)
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    mirrored = np.stack([a, 1 - a], axis=1)  # the same partition: 5 rows on the left via feature 0, 3 via feature 1
    duplicated = np.stack([a, a], axis=1)  # the same partition and the same rows on the left: lower index
    for search in ("reference", "levelwise"):
        assert DecisionTree(max_depth=1, split_search=search).fit(mirrored, y).feature_[0] == 1
        assert DecisionTree(max_depth=1, split_search=search).fit(duplicated, y).feature_[0] == 0


def test_levelwise_counting_paths_agree_with_brute_force():
    """The three ways LevelCells counts a node (all entries, dense histogram, sorted entries) give the same cells."""
    from learnloop.scratch.cart_cells import LevelCells, class_bits
    from learnloop.scratch.cart_levelwise import Presorted

    x, y = _tied_data(5, 300, 5)
    pre = Presorted(x)
    entry_class = (pre.entry_bin << class_bits(3)) | y[pre.entry_row]
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(300, 200, replace=False))
    node = rng.integers(0, 4, size=200)
    w = rng.integers(1, 5, size=200).astype(float)
    nodes = np.ones(4, dtype=bool)
    got = [make(pre, entry_class, rows, node, nodes, w, 3)
           for make in (LevelCells._full, LevelCells._dense, LevelCells._sorted)]
    bins = pre.offset[:-1, None] + pre.rank.astype(np.intp)  # (d, n) bin of every value
    expected = {}
    for r, t, weight in zip(rows, node, w):
        for f in range(5):
            if bins[f, r] != pre.mode_bin[f]:
                key = (int(t) << pre.bin_bits) | int(bins[f, r])
                cls, count = expected.get(key, (np.zeros(3), 0))
                cls = cls.copy()
                cls[y[r]] += weight
                expected[key] = (cls, count + 1)
    far = LevelCells._sorted(pre, entry_class, rows, node + 2**50, None, w, 3)  # keys too wide to pack: argsort
    got.append(LevelCells(((far.key >> pre.bin_bits) - 2**50 << pre.bin_bits) | (far.key & ((1 << pre.bin_bits) - 1)),
                          far.cls, far.rows, pre.bin_bits))
    keys = np.array(sorted(expected))
    for cells in got:
        np.testing.assert_array_equal(cells.key, keys)
        np.testing.assert_array_equal(cells.cls, np.array([expected[k][0] for k in keys]))
        np.testing.assert_array_equal(cells.rows, np.array([expected[k][1] for k in keys]))


def test_forest_trees_equal_reference_trees_and_separate_fits():
    """Trees grown together (one batch, one presorting, bootstrap as weights) equal the per-node reference."""
    x, y = _tied_data(11, 400, 6)
    y[0] = 9  # a class of one row, missing from about a third of the bootstraps
    for kw in ({}, {"max_features": 2, "min_samples_leaf": 3}, {"criterion": "entropy", "max_depth": 4}):
        fast = RandomForest(12, random_state=0, split_search="levelwise", **kw).fit(x, y)
        ref = RandomForest(12, random_state=0, split_search="reference", **kw).fit(x, y)
        for a, b in zip(fast.estimators_, ref.estimators_):
            _same_tree(a, b)
        assert any(len(e.classes_) < len(fast.classes_) for e in fast.estimators_)
        np.testing.assert_array_equal(fast.predict_proba(x), ref.predict_proba(x))
    bag = Bagging(lambda seed: DecisionTree(random_state=seed, split_search="levelwise"), 5, random_state=1).fit(x, y)
    rng = np.random.default_rng(1)  # the bootstraps Bagging draws: counts, then a seed, per estimator
    for estimator in bag.estimators_:
        counts = np.bincount(rng.integers(0, len(x), len(x)), minlength=len(x))
        seed = int(rng.integers(2**31))
        drawn = counts > 0
        alone = DecisionTree(random_state=seed, split_search="reference").fit(x[drawn], y[drawn], counts[drawn])
        _same_tree(estimator, alone)


def test_split_search_choice_and_edge_cases():
    x, y = _tied_data(3, 60, 4)
    fractional = np.random.default_rng(0).random(60)
    with pytest.raises(UserError, match="split_search"):
        DecisionTree(split_search="fast")
    with pytest.raises(UserError, match="whole-number"):
        DecisionTree(split_search="levelwise").fit(x, y, sample_weight=fractional)
    big_fractional = np.random.default_rng(1).random(1000) * 3
    assert not DecisionTree().uses_levelwise(big_fractional, 100)  # auto: fractional weights take the reference
    assert DecisionTree().uses_levelwise(np.ones(1000), 100) and not DecisionTree().uses_levelwise(np.ones(10), 100)
    _same_tree(DecisionTree().fit(x, y, sample_weight=fractional),
               DecisionTree(split_search="reference").fit(x, y, sample_weight=fractional))
    for search in ("reference", "levelwise"):
        assert DecisionTree(split_search=search).fit(np.zeros((5, 0)), [0, 1, 0, 1, 1]).n_leaves == 1
        assert DecisionTree(split_search=search).fit([[1.0]], ["a"]).predict([[3.0]]).tolist() == ["a"]
        assert DecisionTree(split_search=search).fit(np.ones((6, 3)), [0, 1] * 3).n_leaves == 1


def test_levelwise_fallbacks_equal_the_main_paths():
    """Huge whole-number weights (no packed counts, no packed sort keys) and the by-key child cells of huge levels."""
    from learnloop.scratch.cart_levelwise import Presorted, grow

    x, y = _tied_data(8, 1000, 2)
    w = np.full(1000, 2.0**40)
    w[::7] = 2.0**39
    _same_tree(DecisionTree(split_search="levelwise").fit(x, y, sample_weight=w),
               DecisionTree(split_search="reference").fit(x, y, sample_weight=w))
    x, y = _tied_data(9, 500, 5)
    codes = np.unique(y, return_inverse=True)[1]
    pre = Presorted(x)
    args = (pre, [np.arange(500), np.arange(0, 500, 3)], [np.ones(500), np.full(167, 2.0)], codes, codes.max() + 1,
            "gini", np.inf, 2, 1, 2)
    table = grow(*args, [np.random.default_rng(0), np.random.default_rng(1)])
    by_key = grow(*args, [np.random.default_rng(0), np.random.default_rng(1)], max_table=0)
    for a, b in zip(table, by_key):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
