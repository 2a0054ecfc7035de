"""Cholesky decomposition A = L L^T of a symmetric positive-definite matrix, and what it makes easy.

Column (gaxpy) form (Cholesky, published by Benoit 1924; Golub & Van Loan, "Matrix Computations", Alg. 4.2.1):

    L_jj = sqrt(A_jj - sum_{k<j} L_jk^2)
    L_ij = (A_ij - sum_{k<j} L_ik L_jk) / L_jj          i > j

A radicand <= 0 means A is not positive definite (NotPositiveDefiniteError names the leading minor).
Uses: A x = b by L y = b, L^T x = y; x ~ N(mu, Sigma) as x = mu + L z with z ~ N(0, I) since
Cov(L z) = L L^T = Sigma; and log N(x; mu, Sigma) = -1/2 (d log 2 pi + 2 sum_j log L_jj + ||L^{-1}(x - mu)||^2).

Blocked left-looking Cholesky (G&VL section 4.2, block Cholesky; LAPACK's dpotrf): for the block column
J = j:e of `block_size` columns, with everything left of j already factored,

    S = A[j:, J] - L[j:, :j] L[J, :j]^T            one matrix product: all updates from the columns left of j
    L[j:, J] = [L_JJ; S[e:] L_JJ^{-T}]             the column kernel above on the tall block column S

(the kernel's formulas give L_JJ = cholesky(S[J]) and the rows below in one pass), so the n^3/3 flops of the
updates from earlier blocks are matrix products; only the lower triangle of A is read, as before.
`block_size=None` (or 1) runs the column kernel on the whole matrix: the readable reference.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.linalg import (BLOCK_SIZE, NotPositiveDefiniteError, as_rhs, as_square, check_block_size,
                                      solve_triangular)


def _cholesky_unblocked(a: np.ndarray, offset: int = 0) -> np.ndarray:
    """L with a = L L^T by the column form above, reading a's lower triangle; `offset` numbers the minors.

    a may be a tall (m, w) block column [A11; A21]: then the result is [L11; A21 L11^{-T}], its Cholesky
    block column (the column form computes both with the same formulas).
    """
    lower = np.zeros_like(a)
    for j in range(a.shape[1]):
        s = a[j, j] - lower[j, :j] @ lower[j, :j]
        if not s > 0:
            raise NotPositiveDefiniteError(
                f"matrix is not positive definite (leading minor of order {offset + j + 1})")
        lower[j, j] = np.sqrt(s)
        lower[j + 1:, j] = (a[j + 1:, j] - lower[j + 1:, :j] @ lower[j, :j]) / lower[j, j]
    return lower


def _is_symmetric(a: np.ndarray, tile: int = 128) -> bool:
    """np.allclose(a, a.T, rtol=1e-10, atol=1e-12 max|a|) for finite a, i.e. |a_ij - a_ji| <= atol + rtol
    min(|a_ij|, |a_ji|) for all i, j, checked tile against mirror tile so both stay in cache (a.T read whole
    jumps a row per element)."""
    n, atol = a.shape[0], 1e-12 * np.abs(a).max()
    for i in range(0, n, tile):
        for j in range(0, i + 1, tile):
            block, mirror = a[i:i + tile, j:j + tile], a[j:j + tile, i:i + tile].T
            if not np.all(np.abs(block - mirror) <= atol + 1e-10 * np.minimum(np.abs(block), np.abs(mirror))):
                return False
    return True


def cholesky(a, block_size: int | None = BLOCK_SIZE) -> np.ndarray:
    """Lower-triangular L with A = L L^T."""
    a = as_square(a)
    if not _is_symmetric(a):
        raise UserError("Cholesky needs a symmetric matrix; this one is not symmetric")
    n = a.shape[0]
    nb = check_block_size(block_size)
    if not nb:
        return _cholesky_unblocked(a)
    lower = np.zeros_like(a)
    for j in range(0, n, nb):
        e = min(j + nb, n)
        lower[j:, j:e] = _cholesky_unblocked(a[j:, j:e] - lower[j:, :j] @ lower[j:e, :j].T, offset=j)
    return lower


def cho_solve(lower: np.ndarray, b, block_size: int | None = BLOCK_SIZE) -> np.ndarray:
    """x with L L^T x = b, given L from `cholesky`."""
    y = solve_triangular(lower, as_rhs(b, lower.shape[0]), lower=True, block_size=block_size)
    return solve_triangular(lower.T, y, lower=False, block_size=block_size)


def solve_spd(a, b, block_size: int | None = BLOCK_SIZE) -> np.ndarray:
    return cho_solve(cholesky(a, block_size), b, block_size)


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
