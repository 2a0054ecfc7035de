"""LU, Householder QR and Cholesky (and the solvers on them) agree with SciPy; bad matrices raise clearly."""

import numpy as np
import pytest
import scipy.linalg as sla
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal as scipy_mvn

from learnloop.errors import UserError
from learnloop.scratch import linalg_cholesky as C
from learnloop.scratch import linalg_lu as LU
from learnloop.scratch import linalg_qr as Q
from learnloop.scratch.linalg import NotPositiveDefiniteError, SingularMatrixError, solve_triangular

CASES = settings(max_examples=40, deadline=None, derandomize=True)  # fixed examples: no flaky conditioning
sizes = st.integers(1, 12)
seeds = st.integers(0, 2**16)


def _spd(rng, n):
    m = rng.normal(size=(n, n))
    return m @ m.T + n * np.eye(n)


@CASES
@given(n=sizes, seed=seeds)
def test_lu_matches_scipy(n, seed):
    a = np.random.default_rng(seed).normal(size=(n, n))
    p, lower, upper = LU.lu(a)
    sp, sl, su = sla.lu(a)
    np.testing.assert_allclose(p, sp)
    np.testing.assert_allclose(lower, sl, atol=1e-10)
    np.testing.assert_allclose(upper, su, atol=1e-10)
    np.testing.assert_allclose(p @ lower @ upper, a, atol=1e-10)
    assert LU.det(a) == pytest.approx(np.linalg.det(a), rel=1e-8, abs=1e-12)


@CASES
@given(n=sizes, k=st.integers(1, 3), seed=seeds)
def test_solve_and_inverse_match_scipy(n, k, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, n)) + 3 * np.eye(n), rng.normal(size=(n, k))
    np.testing.assert_allclose(LU.solve(a, b), sla.solve(a, b), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(LU.solve(a, b[:, 0]), sla.solve(a, b[:, 0]), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(LU.inv(a), sla.inv(a), rtol=1e-8, atol=1e-10)


@CASES
@given(m=sizes, n=sizes, seed=seeds)
def test_householder_qr_matches_scipy(m, n, seed):
    a = np.random.default_rng(seed).normal(size=(m, n))
    for mode in ("full", "economic"):
        q, r = Q.qr(a, mode=mode)
        sq, sr = sla.qr(a, mode=mode)
        np.testing.assert_allclose(q, sq, atol=1e-10)
        np.testing.assert_allclose(r, sr, atol=1e-10)
        np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-12)
        np.testing.assert_allclose(q @ r, a, atol=1e-10)


@CASES
@given(n=sizes, extra=st.integers(0, 10), seed=seeds)
def test_least_squares_matches_scipy(n, extra, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n + extra, n)), rng.normal(size=(n + extra, 2))
    np.testing.assert_allclose(Q.lstsq(a, b), sla.lstsq(a, b)[0], rtol=1e-8, atol=1e-10)


@CASES
@given(n=sizes, seed=seeds)
def test_cholesky_and_spd_solve_match_scipy(n, seed):
    rng = np.random.default_rng(seed)
    a, b = _spd(rng, n), rng.normal(size=n)
    lower = C.cholesky(a)
    np.testing.assert_allclose(lower, sla.cholesky(a, lower=True), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(C.solve_spd(a, b), sla.cho_solve(sla.cho_factor(a), b), rtol=1e-9)


def test_multivariate_normal_sampling_and_density():
    rng = np.random.default_rng(0)
    cov, mean = _spd(rng, 4) / 4, rng.normal(size=4)
    z = rng.standard_normal((5, 4))
    np.testing.assert_allclose(C.multivariate_normal(mean, cov, 5, z=z), mean + z @ sla.cholesky(cov, lower=True).T)
    draws = C.multivariate_normal(mean, cov, 200_000, rng=np.random.default_rng(1))
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.03 * np.abs(cov).max())
    x = rng.normal(size=(6, 4))
    np.testing.assert_allclose(C.mvn_logpdf(x, mean, cov), scipy_mvn(mean, cov).logpdf(x), rtol=1e-10)


def test_triangular_substitution():
    rng = np.random.default_rng(0)
    t = np.tril(rng.normal(size=(6, 6))) + 4 * np.eye(6)
    b = rng.normal(size=(6, 3))
    np.testing.assert_allclose(solve_triangular(t, b, lower=True), sla.solve_triangular(t, b, lower=True))
    np.testing.assert_allclose(solve_triangular(t.T, b, lower=False), sla.solve_triangular(t.T, b, lower=False))


def test_singular_and_non_positive_definite_inputs_raise():
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    with pytest.raises(SingularMatrixError, match="singular"):
        LU.solve(singular, np.ones(2))
    with pytest.raises(SingularMatrixError, match="singular"):
        LU.solve(np.zeros((3, 3)), np.ones(3))
    assert LU.det(singular) == 0.0
    with pytest.raises(SingularMatrixError, match="rank deficient"):
        Q.lstsq(np.column_stack([np.arange(5.0), 2 * np.arange(5.0)]), np.ones(5))
    with pytest.raises(NotPositiveDefiniteError, match="leading minor of order 2"):
        C.cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(NotPositiveDefiniteError):
        C.multivariate_normal(np.zeros(2), np.array([[1.0, 1.0], [1.0, 1.0]]), 3)
    with pytest.raises(UserError, match="not symmetric"):
        C.cholesky(np.array([[2.0, 1.0], [0.0, 2.0]]))
    assert issubclass(SingularMatrixError, np.linalg.LinAlgError)


def test_shape_errors():
    with pytest.raises(UserError, match="square"):
        LU.lu(np.ones((2, 3)))
    with pytest.raises(UserError, match="3 rows"):
        LU.solve(np.eye(3), np.ones(4))
    with pytest.raises(UserError, match="at least as many rows"):
        Q.lstsq(np.ones((2, 3)), np.ones(2))
    with pytest.raises(UserError, match="NaN"):
        C.cholesky(np.array([[np.nan]]))
    with pytest.raises(UserError, match="mean has shape"):
        C.mvn_logpdf(np.zeros((1, 2)), np.zeros(3), np.eye(2))
