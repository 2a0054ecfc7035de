"""Cholesky decomposition A = L L^T of a symmetric positive-definite matrix, and what it makes easy.

Column (gaxpy) form (Cholesky, published by Benoit 1924; Golub & Van Loan, "Matrix Computations", Alg. 4.2.1):

    L_jj = sqrt(A_jj - sum_{k<j} L_jk^2)
    L_ij = (A_ij - sum_{k<j} L_ik L_jk) / L_jj          i > j

A radicand <= 0 means A is not positive definite (NotPositiveDefiniteError names the leading minor).
Uses: A x = b by L y = b, L^T x = y; x ~ N(mu, Sigma) as x = mu + L z with z ~ N(0, I) since
Cov(L z) = L L^T = Sigma; and log N(x; mu, Sigma) = -1/2 (d log 2 pi + 2 sum_j log L_jj + ||L^{-1}(x - mu)||^2).
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.linalg import NotPositiveDefiniteError, as_rhs, as_square, solve_triangular


def cholesky(a) -> np.ndarray:
    """Lower-triangular L with A = L L^T."""
    a = as_square(a)
    if not np.allclose(a, a.T, rtol=1e-10, atol=1e-12 * np.abs(a).max()):
        raise UserError("Cholesky needs a symmetric matrix; this one is not symmetric")
    n = a.shape[0]
    lower = np.zeros_like(a)
    for j in range(n):
        s = a[j, j] - lower[j, :j] @ lower[j, :j]
        if not s > 0:
            raise NotPositiveDefiniteError(f"matrix is not positive definite (leading minor of order {j + 1})")
        lower[j, j] = np.sqrt(s)
        lower[j + 1:, j] = (a[j + 1:, j] - lower[j + 1:, :j] @ lower[j, :j]) / lower[j, j]
    return lower


def cho_solve(lower: np.ndarray, b) -> np.ndarray:
    """x with L L^T x = b, given L from `cholesky`."""
    y = solve_triangular(lower, as_rhs(b, lower.shape[0]), lower=True)
    return solve_triangular(lower.T, y, lower=False)


def solve_spd(a, b) -> np.ndarray:
    return cho_solve(cholesky(a), b)


def _mean_and_factor(mean, cov) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, dtype=np.float64)
    cov = as_square(cov, "covariance")
    if mean.shape != (cov.shape[0],):
        raise UserError(f"mean has shape {mean.shape} but covariance is {cov.shape}")
    return mean, cholesky(cov)


def multivariate_normal(mean, cov, size: int, rng: np.random.Generator | None = None, z=None) -> np.ndarray:
    """`size` draws (rows) of N(mean, cov) as mean + z L^T; pass z (size, d) to fix the standard normals."""
    mean, lower = _mean_and_factor(mean, cov)
    if z is None:
        rng = rng if rng is not None else np.random.default_rng()
        z = rng.standard_normal((size, len(mean)))
    z = np.asarray(z, dtype=np.float64)
    if z.shape != (size, len(mean)):
        raise UserError(f"z must have shape ({size}, {len(mean)}), got {z.shape}")
    return mean + z @ lower.T


def mvn_logpdf(x, mean, cov) -> np.ndarray:
    """log N(x; mean, cov) for each row of x."""
    mean, lower = _mean_and_factor(mean, cov)
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if x.shape[1] != len(mean):
        raise UserError(f"x must have {len(mean)} columns, got shape {x.shape}")
    white = solve_triangular(lower, (x - mean).T, lower=True)
    d = len(mean)
    return -0.5 * (d * np.log(2 * np.pi) + 2 * np.log(np.diag(lower)).sum() + (white ** 2).sum(axis=0))
