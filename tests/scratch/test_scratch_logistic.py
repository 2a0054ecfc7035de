"""Logistic regression with hand-derived Newton steps reaches scikit-learn's optimum for the same penalty."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.linear_model import LogisticRegression as SkLogistic
from sklearn.preprocessing import StandardScaler

from learnloop.errors import UserError
from learnloop.scratch.logistic import LogisticRegression
from learnloop.scratch.numgrad import numerical_gradient


def _standardised(loader):
    x, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(x), y


def _reference(x, y, c, fit_intercept=True):
    """scikit-learn's Newton-CG (conjugate-gradient inner solves, unlike our direct ones) run to a tight tol."""
    return SkLogistic(C=c, solver="newton-cg", tol=1e-10, max_iter=1000, fit_intercept=fit_intercept).fit(x, y)


@pytest.mark.parametrize("c", [0.05, 1.0, 20.0])
def test_binary_matches_sklearn_on_breast_cancer(c):
    x, y = _standardised(load_breast_cancer)
    ours, ref = LogisticRegression(C=c).fit(x, y), _reference(x, y, c)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-8)
    assert (ours.predict(x) == ref.predict(x)).all()


@pytest.mark.parametrize("loader,c", [(load_iris, 1.0), (load_wine, 0.3), (load_iris, 50.0)])
def test_multinomial_matches_sklearn(loader, c):
    x, y = _standardised(loader)
    ours, ref = LogisticRegression(C=c).fit(x, y), _reference(x, y, c)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-8)


def test_without_intercept_and_with_string_labels():
    x, y = _standardised(load_iris)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    ours, ref = LogisticRegression(C=2.0, fit_intercept=False).fit(x, names), _reference(x, names, 2.0, False)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-6, atol=1e-7)
    assert (ours.predict(x) == ref.predict(x)).all()


@pytest.mark.parametrize("n_classes", [2, 4])
def test_hand_derived_gradient_matches_central_differences(n_classes):
    rng = np.random.default_rng(n_classes)
    x, y = rng.normal(size=(30, 3)), rng.integers(0, n_classes, size=30)
    model = LogisticRegression(C=0.7).fit(x, y)
    design = model._design(x)
    targets = y[:, None].astype(float) if model.binary_ else np.eye(n_classes)[y]
    w = rng.normal(size=(4, 1 if n_classes == 2 else n_classes))
    mask = np.ones_like(w)
    mask[-1] = 0
    grad, hess = model._derivatives(w, design, targets, mask)
    numeric = numerical_gradient(lambda v: model._objective(v, design, targets, mask), w)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)
    numeric_h = np.stack([numerical_gradient(
        lambda v, k=k: model._derivatives(v.reshape(w.shape), design, targets, mask)[0].reshape(-1)[k],
        w.reshape(-1))
        for k in range(w.size)])
    np.testing.assert_allclose(hess, numeric_h, rtol=1e-5, atol=1e-6)


def test_errors():
    with pytest.raises(UserError, match="not fitted"):
        LogisticRegression().predict(np.ones((2, 2)))
    with pytest.raises(UserError, match="two classes"):
        LogisticRegression().fit(np.ones((3, 2)), np.zeros(3))
    with pytest.raises(UserError, match="y must have shape"):
        LogisticRegression().fit(np.ones((3, 2)), np.zeros(4))
    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(UserError, match="features"):
        model.predict(np.ones((2, 3)))
