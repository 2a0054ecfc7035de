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
from learnloop.scratch.linalg import BLOCK_SIZE, NotPositiveDefiniteError, SingularMatrixError, solve_triangular

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


# ---- blocked factorisations: equal to the unblocked reference kernels and to SciPy ----

def _scipy_perm(ipiv):
    """scipy.linalg.lu_factor's swap sequence (row i <-> ipiv[i], in order) as the permutation `piv` we return."""
    perm = np.arange(len(ipiv))
    for i, j in enumerate(ipiv):
        perm[[i, j]] = perm[[j, i]]
    return perm


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 40, 64, 65, 130, 300])
@pytest.mark.parametrize("block", [2, 3, 16, 33, LU.BLOCK_SIZE])
def test_blocked_lu_has_the_unblocked_and_scipy_pivots(n, block):
    a = np.random.default_rng(n + block).normal(size=(n, n))
    packed, piv = LU.lu_factor(a, block_size=block)
    ref, ref_piv = LU.lu_factor(a, block_size=None)
    sp, sp_ipiv = sla.lu_factor(a)
    np.testing.assert_array_equal(piv, ref_piv)
    np.testing.assert_array_equal(piv, _scipy_perm(sp_ipiv))
    np.testing.assert_allclose(packed, ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(packed, sp, rtol=1e-9, atol=1e-10)
    lower, upper = np.tril(packed, -1) + np.eye(n), np.triu(packed)
    np.testing.assert_allclose(lower @ upper, a[piv], atol=1e-12 * n)


@CASES
@given(n=st.integers(1, 70), block=st.integers(1, 40), seed=seeds)
def test_blocked_lu_equals_unblocked_for_any_block_size(n, block, seed):
    a = np.random.default_rng(seed).normal(size=(n, n))
    packed, piv = LU.lu_factor(a, block_size=block)
    ref, ref_piv = LU.lu_factor(a, block_size=None)
    np.testing.assert_array_equal(piv, ref_piv)
    np.testing.assert_allclose(packed, ref, rtol=1e-9, atol=1e-10)


def test_unblocked_lu_kernel_is_the_textbook_loop():
    """The reference kernel (working on A^T) gives bit-for-bit the rank-1 loop of Alg. 3.4.1 on A itself."""
    a = np.random.default_rng(3).normal(size=(9, 9))
    lu, piv = a.copy(), np.arange(9)
    for k in range(8):
        p = k + int(np.argmax(np.abs(lu[k:, k])))
        lu[[k, p]], piv[[k, p]] = lu[[p, k]], piv[[p, k]]
        lu[k + 1:, k] /= lu[k, k]
        lu[k + 1:, k + 1:] -= np.outer(lu[k + 1:, k], lu[k, k + 1:])
    packed, ours = LU.lu_factor(a, block_size=None)
    np.testing.assert_array_equal(ours, piv)
    np.testing.assert_array_equal(packed, lu)


@pytest.mark.parametrize("block", [None, 4, 16, LU.BLOCK_SIZE])
def test_blocked_lu_solvers_match_scipy(block):
    rng = np.random.default_rng(7)
    n = 150
    a, b = rng.normal(size=(n, n)), rng.normal(size=(n, 4))
    np.testing.assert_allclose(LU.solve(a, b, block_size=block), sla.solve(a, b), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(LU.solve(a, b[:, 0], block_size=block), sla.solve(a, b[:, 0]), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(LU.inv(a, block_size=block), sla.inv(a), rtol=1e-8, atol=1e-10)
    assert LU.det(a, block_size=block) == pytest.approx(sla.det(a), rel=1e-9)
    p, lower, upper = LU.lu(a, block_size=block)
    sp, sl, su = sla.lu(a)
    np.testing.assert_array_equal(p, sp)
    np.testing.assert_allclose(upper, su, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("block", [None, 4, 16, LU.BLOCK_SIZE])
def test_blocked_lu_on_singular_matrices_raises_as_the_reference(block):
    a = np.random.default_rng(1).normal(size=(40, 40))
    a[:, 21] = 0.0  # stays exactly zero under elimination: U_21,21 = 0 in every variant
    packed, _ = LU.lu_factor(a, block_size=block)
    assert packed[21, 21] == 0.0
    assert LU.det(a, block_size=block) == 0.0
    with pytest.raises(SingularMatrixError, match="singular to working precision"):
        LU.solve(a, np.ones(40), block_size=block)
    with pytest.raises(SingularMatrixError, match="singular"):
        LU.solve(np.zeros((70, 70)), np.ones(70), block_size=block)
    dependent = np.outer(np.arange(1.0, 81.0), np.arange(1.0, 81.0))  # rank 1: pivots decided by rounding
    with pytest.raises(SingularMatrixError, match="singular"):
        LU.solve(dependent, np.ones(80), block_size=block)


@pytest.mark.parametrize("shape", [(1, 1), (6, 1), (1, 6), (40, 40), (90, 33), (33, 90), (100, 70)])
@pytest.mark.parametrize("block", [2, 5, 16, Q.BLOCK_SIZE])
def test_blocked_qr_equals_unblocked_and_scipy(shape, block):
    a = np.random.default_rng(sum(shape) + block).normal(size=shape)
    for mode in ("full", "economic"):
        q, r = Q.qr(a, mode=mode, block_size=block)
        rq, rr = Q.qr(a, mode=mode, block_size=None)
        sq, sr = sla.qr(a, mode=mode)  # same sign convention (LAPACK's dgeqrf): no column sign fix-up needed
        for ours, ref, sp in ((q, rq, sq), (r, rr, sr)):
            assert ours.shape == sp.shape
            np.testing.assert_allclose(ours, ref, atol=1e-11)
            np.testing.assert_allclose(ours, sp, atol=1e-11)
        assert np.all(r[np.tril_indices_from(r, -1)] == 0.0)
        np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-13)
        np.testing.assert_allclose(q @ r, a, atol=1e-12)


@pytest.mark.parametrize("block", [None, 3, 8, Q.BLOCK_SIZE])
def test_blocked_qr_with_identity_reflectors(block):
    """A column already zero below the diagonal gives H = I (tau = 0) inside a panel, as in LAPACK."""
    a = np.random.default_rng(2).normal(size=(50, 30))
    a[:, 10] = 0.0
    a[20:, 13] = 0.0
    a[14:, 13] = 0.0
    q, r = Q.qr(a, block_size=block)
    sq, sr = sla.qr(a)
    np.testing.assert_allclose(q, sq, atol=1e-11)
    np.testing.assert_allclose(r, sr, atol=1e-11)
    np.testing.assert_allclose(q @ r, a, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (9, 1), (40, 40), (200, 70), (301, 129)])
@pytest.mark.parametrize("block", [None, 4, 16, Q.BLOCK_SIZE])
def test_blocked_least_squares_matches_scipy(shape, block):
    rng = np.random.default_rng(shape[0])
    a, b = rng.normal(size=shape), rng.normal(size=(shape[0], 3))
    np.testing.assert_allclose(Q.lstsq(a, b, block_size=block), sla.lstsq(a, b)[0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(Q.lstsq(a, b[:, 1], block_size=block), sla.lstsq(a, b[:, 1])[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("block", [None, 4, 16, Q.BLOCK_SIZE])
def test_blocked_least_squares_rejects_rank_deficiency_and_nan(block):
    a = np.random.default_rng(5).normal(size=(120, 60))
    a[:, 45] = a[:, 3] - 2 * a[:, 50]
    with pytest.raises(SingularMatrixError, match="rank deficient"):
        Q.lstsq(a, np.ones(120), block_size=block)
    a[7, 7] = np.nan
    with pytest.raises(UserError, match="NaN or Inf"):
        Q.lstsq(a, np.ones(120), block_size=block)


@pytest.mark.parametrize("n", [1, 2, 17, 63, 64, 65, 150])
@pytest.mark.parametrize("block", [2, 7, 16, C.BLOCK_SIZE])
def test_blocked_cholesky_equals_unblocked_and_scipy(n, block):
    rng = np.random.default_rng(n * block)
    a = _spd(rng, n)
    lower = C.cholesky(a, block_size=block)
    np.testing.assert_allclose(lower, C.cholesky(a, block_size=None), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lower, sla.cholesky(a, lower=True), rtol=1e-10, atol=1e-12)
    assert np.all(np.triu(lower, 1) == 0.0)
    np.testing.assert_allclose(lower @ lower.T, a, rtol=1e-12, atol=1e-12 * n)
    b = rng.normal(size=(n, 2))
    expect = sla.cho_solve(sla.cho_factor(a), b)
    np.testing.assert_allclose(C.solve_spd(a, b, block_size=block), expect, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(C.cho_solve(lower, b[:, 0], block_size=block), expect[:, 0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block", [None, 4, 16, C.BLOCK_SIZE])
@pytest.mark.parametrize("order", [1, 2, 40, 64, 65, 100])
def test_blocked_cholesky_names_the_same_failing_minor(block, order):
    rng = np.random.default_rng(order)
    a = _spd(rng, 100)
    pivot = sla.cholesky(a[:order, :order], lower=True)[-1, -1]
    a[order - 1, order - 1] -= pivot ** 2 + 1.0  # the radicand of column order-1 becomes -1: minors < order stay PD
    with pytest.raises(NotPositiveDefiniteError, match=f"leading minor of order {order}\\)"):
        C.cholesky(a, block_size=block)
    with pytest.raises(NotPositiveDefiniteError, match=f"leading minor of order {order}\\)"):
        C.solve_spd(a, np.ones(100), block_size=block)


def test_cholesky_symmetry_check_sees_every_tile():
    a = _spd(np.random.default_rng(0), 300)  # several 128-tiles of the tiled symmetry check
    for i, j in ((299, 0), (5, 200), (130, 257), (257, 256)):
        bad = a.copy()
        bad[i, j] += 1e-6 * np.abs(a).max()
        with pytest.raises(UserError, match="not symmetric"):
            C.cholesky(bad)
    nearly = a + 1e-13 * np.abs(a).max() * np.triu(np.ones_like(a), 1)  # within allclose's tolerance: accepted
    assert np.allclose(nearly, nearly.T, rtol=1e-10, atol=1e-12 * np.abs(nearly).max())
    np.testing.assert_allclose(C.cholesky(nearly), C.cholesky(nearly, block_size=None), rtol=1e-10)


def test_mvn_with_blocked_factor_matches_scipy():
    rng = np.random.default_rng(4)
    d = 130
    cov, mean = _spd(rng, d) / d, rng.normal(size=d)
    x = rng.normal(size=(7, d))
    np.testing.assert_allclose(C.mvn_logpdf(x, mean, cov), scipy_mvn(mean, cov).logpdf(x), rtol=1e-10)
    z = rng.standard_normal((5, d))
    np.testing.assert_allclose(C.multivariate_normal(mean, cov, 5, z=z), mean + z @ sla.cholesky(cov, lower=True).T,
                               atol=1e-12)


@pytest.mark.parametrize("n", [1, 5, 16, 17, 100])
@pytest.mark.parametrize("block", [None, 2, 16, BLOCK_SIZE])
@pytest.mark.parametrize("lower", [True, False])
def test_blocked_triangular_substitution(n, block, lower):
    rng = np.random.default_rng(n)
    full = rng.normal(size=(n, n)) + 4 * np.eye(n)
    t = np.tril(full) if lower else np.triu(full)
    for b in (rng.normal(size=n), rng.normal(size=(n, 3))):
        for unit in (False, True):
            expect = sla.solve_triangular(t, b, lower=lower, unit_diagonal=unit)
            got = solve_triangular(full, b, lower=lower, unit_diagonal=unit, block_size=block)  # other triangle unread
            np.testing.assert_allclose(got, expect, rtol=1e-10, atol=1e-12)
            assert got.shape == b.shape


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_block_size_must_be_a_positive_integer(bad):
    for call in (LU.lu_factor, Q.qr, C.cholesky, lambda a, block_size: solve_triangular(a, np.ones(3), True, False,
                                                                                         block_size)):
        with pytest.raises(UserError, match="block_size must be a positive integer or None"):
            call(np.eye(3), block_size=bad)
    np.testing.assert_array_equal(LU.lu_factor(np.eye(3), block_size=1)[0], np.eye(3))  # 1 = the reference
