"""LU decomposition with partial pivoting, P A = L U (Golub & Van Loan, "Matrix Computations", Alg. 3.4.1).

Outer-product (right-looking) Gaussian elimination: at step k the row p = argmax_{i>=k} |A_ik| is swapped into
row k (`piv` records the permutation), then

    l_ik = A_ik / A_kk                       (i > k, stored below the diagonal)
    A_ij <- A_ij - l_ik A_kj                 (i, j > k, a rank-1 update of the trailing block)

so L (unit lower) and U share one array, as LAPACK's getrf and scipy.linalg.lu_factor do. Solving A x = b:
L y = b[piv] by forward, then U x = y by back substitution. det A = (-1)^(swaps) prod U_kk.
A pivot |U_kk| <= n eps max|A| means A is singular to working precision: `lu_solve` and `solve` raise.
"""

from __future__ import annotations

import numpy as np

from learnloop.scratch.linalg import SingularMatrixError, as_rhs, as_square, solve_triangular


def lu_factor(a) -> tuple[np.ndarray, np.ndarray]:
    """(LU, piv): L strictly below the diagonal (unit diagonal implied), U on and above; (P A) = A[piv]."""
    lu = as_square(a).copy()
    n = lu.shape[0]
    piv = np.arange(n)
    for k in range(n - 1):
        p = k + int(np.argmax(np.abs(lu[k:, k])))
        if p != k:
            lu[[k, p]] = lu[[p, k]]
            piv[[k, p]] = piv[[p, k]]
        if lu[k, k] != 0:
            lu[k + 1:, k] /= lu[k, k]
            lu[k + 1:, k + 1:] -= np.outer(lu[k + 1:, k], lu[k, k + 1:])
    return lu, piv


def lu(a) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, L, U) with A = P L U, scipy.linalg.lu's convention."""
    packed, piv = lu_factor(a)
    n = packed.shape[0]
    return np.eye(n)[piv].T, np.tril(packed, -1) + np.eye(n), np.triu(packed)


def _check_pivots(packed: np.ndarray, scale: float) -> None:
    diag = np.abs(np.diag(packed))
    k = int(np.argmin(diag))
    if diag[k] <= len(diag) * np.finfo(float).eps * max(scale, np.finfo(float).tiny):
        raise SingularMatrixError(f"matrix is singular to working precision (pivot {k} is {diag[k]:.3g})")


def lu_solve(factors: tuple[np.ndarray, np.ndarray], b, scale: float | None = None) -> np.ndarray:
    packed, piv = factors
    _check_pivots(packed, np.abs(packed).max() if scale is None else scale)
    y = solve_triangular(packed, as_rhs(b, len(piv))[piv], lower=True, unit_diagonal=True)
    return solve_triangular(packed, y, lower=False)


def solve(a, b) -> np.ndarray:
    """x with A x = b (b may hold several right-hand sides as columns)."""
    a = as_square(a)
    return lu_solve(lu_factor(a), b, scale=np.abs(a).max())


def det(a) -> float:
    packed, piv = lu_factor(a)
    swaps = len(piv) - len(_cycles(piv))
    return float((-1) ** swaps * np.prod(np.diag(packed)))


def inv(a) -> np.ndarray:
    a = as_square(a)
    return solve(a, np.eye(a.shape[0]))


def _cycles(perm: np.ndarray) -> list[int]:
    """Cycle lengths of a permutation; its parity is n - number of cycles."""
    seen, lengths = np.zeros(len(perm), dtype=bool), []
    for start in range(len(perm)):
        length, i = 0, start
        while not seen[i]:
            seen[i], i, length = True, perm[i], length + 1
        if length:
            lengths.append(length)
    return lengths
