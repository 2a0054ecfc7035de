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
