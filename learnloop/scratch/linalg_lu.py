"""LU decomposition with partial pivoting, P A = L U (Golub & Van Loan, "Matrix Computations", Alg. 3.4.1).

Outer-product (right-looking) Gaussian elimination: at step k the row p = argmax_{i>=k} |A_ik| is swapped into
row k (`piv` records the permutation), then

    l_ik = A_ik / A_kk                       (i > k, stored below the diagonal)
    A_ij <- A_ij - l_ik A_kj                 (i, j > k, a rank-1 update of the trailing block)

so L (unit lower) and U share one array, as LAPACK's getrf and scipy.linalg.lu_factor do. Solving A x = b:
L y = b[piv] by forward, then U x = y by back substitution. det A = (-1)^(swaps) prod U_kk.
A pivot |U_kk| <= n eps max|A| means A is singular to working precision: `lu_solve` and `solve` raise.

Blocked right-looking LU (G&VL section 3.4, "block Gaussian elimination with pivoting"; LAPACK's dgetrf): with
the columns cut into panels of `block_size` columns, for the panel k:e

    1. factor the panel A[k:, k:e] = P_1 [L11; L21] U11, pivots searched over all rows k: (so they are the
       pivots of the unblocked algorithm, in exact arithmetic);
    2. apply the panel's row swaps P_1 to the rest of the matrix (columns :k and e:), moved rows only;
    3. U12 = L11^{-1} A12 by (blocked) forward substitution with the unit lower L11;
    4. A22 <- A22 - L21 U12, one matrix product that holds most of the 2/3 n^3 flops.

The panel itself is factored recursively (Toledo 1997; LAPACK's dgetrf2): split its columns in halves, factor
the left half, swap, substitute and update the right half as in 2-4, factor the right half, and swap its rows
in the left half; panels of at most LEAF columns go to the rank-1 kernel. So the kernel's rank-1 updates only
ever touch LEAF-column strips and the panel's flops are matrix products too.

`block_size=None` (or 1) runs the rank-1 kernel on the whole matrix: the readable reference.
"""

from __future__ import annotations

import numpy as np

from learnloop.scratch.linalg import (BLOCK_SIZE, SingularMatrixError, as_rhs, as_square, check_block_size,
                                      substitute)

LEAF = 16  # widest panel the recursive panel factorisation hands to the rank-1 kernel


def _lu_unblocked(a: np.ndarray) -> np.ndarray:
    """Factor the (m, w) panel in place by the rank-1 steps above; returns perm with (input a)[perm] = L U.

    Works on at = a^T, so that column k of the panel (pivot search, multipliers) is the contiguous row at[k];
    the rank-1 update A[k+1:, k+1:] -= l u^T is at[k+1:, k+1:] -= u l^T.
    """
    at = a.T.copy()
    w, m = at.shape
    perm = list(range(m))
    for k in range(min(m - 1, w)):
        col = at[k]
        p = k + int(np.abs(col[k:]).argmax())
        if p != k:  # swap rows k and p of the panel = columns k and p of at
            row_k = at[:, k].copy()
            at[:, k] = at[:, p]
            at[:, p] = row_k
            perm[k], perm[p] = perm[p], perm[k]
        pivot = col[k]
        if pivot != 0:
            col[k + 1:] /= pivot
            at[k + 1:, k + 1:] -= at[k + 1:, k, None] * col[k + 1:]
    a[...] = at.T
    return np.array(perm)


def _swap_rows(a: np.ndarray, perm: np.ndarray) -> None:
    """a <- a[perm], copying only the rows that move (at most 2 per pivot)."""
    moved = np.flatnonzero(perm != np.arange(len(perm)))
    if len(moved):
        a[moved] = a[perm[moved]]


def _lu_panel(a: np.ndarray) -> np.ndarray:
    """Factor the (m, w) panel in place by recursive halving (dgetrf2); returns its row permutation."""
    w = a.shape[1]
    if w <= LEAF:
        return _lu_unblocked(a)
    h = w // 2
    perm = _lu_panel(a[:, :h])
    _swap_rows(a[:, h:], perm)
    substitute(a[:h, :h], a[:h, h:], lower=True, unit_diagonal=True)
    a[h:, h:] -= a[h:, :h] @ a[:h, h:]
    perm_right = _lu_panel(a[h:, h:])
    _swap_rows(a[h:, :h], perm_right)
    perm[h:] = perm[h:][perm_right]
    return perm


def lu_factor(a, block_size: int | None = BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(LU, piv): L strictly below the diagonal (unit diagonal implied), U on and above; (P A) = A[piv]."""
    lu = as_square(a).copy()
    n = lu.shape[0]
    nb = check_block_size(block_size)
    if not nb:
        return lu, _lu_unblocked(lu)
    piv = np.arange(n)
    for k in range(0, n, nb):
        e = min(k + nb, n)
        perm = _lu_panel(lu[k:, k:e])
        _swap_rows(lu[k:, :k], perm)
        _swap_rows(lu[k:, e:], perm)
        piv[k:] = piv[k:][perm]
        if e < n:
            substitute(lu[k:e, k:e], lu[k:e, e:], lower=True, unit_diagonal=True, block_size=block_size)
            lu[e:, e:] -= lu[e:, k:e] @ lu[k:e, e:]
    return lu, piv


def lu(a, block_size: int | None = BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P, L, U) with A = P L U, scipy.linalg.lu's convention."""
    packed, piv = lu_factor(a, block_size)
    n = packed.shape[0]
    return np.eye(n)[piv].T, np.tril(packed, -1) + np.eye(n), np.triu(packed)


def _check_pivots(packed: np.ndarray, scale: float) -> None:
    diag = np.abs(np.diag(packed))
    k = int(np.argmin(diag))
    if diag[k] <= len(diag) * np.finfo(float).eps * max(scale, np.finfo(float).tiny):
        raise SingularMatrixError(f"matrix is singular to working precision (pivot {k} is {diag[k]:.3g})")


def lu_solve(factors: tuple[np.ndarray, np.ndarray], b, scale: float | None = None,
             block_size: int | None = BLOCK_SIZE) -> np.ndarray:
    packed, piv = factors
    _check_pivots(packed, np.abs(packed).max() if scale is None else scale)
    x = as_rhs(b, len(piv))[piv]  # fancy indexing copies: solved in place
    substitute(packed, x, lower=True, unit_diagonal=True, block_size=block_size)
    substitute(packed, x, lower=False, block_size=block_size)
    return x


def solve(a, b, block_size: int | None = BLOCK_SIZE) -> np.ndarray:
    """x with A x = b (b may hold several right-hand sides as columns)."""
    a = as_square(a)
    return lu_solve(lu_factor(a, block_size), b, scale=np.abs(a).max(), block_size=block_size)


def det(a, block_size: int | None = BLOCK_SIZE) -> float:
    packed, piv = lu_factor(a, block_size)
    swaps = len(piv) - len(_cycles(piv))
    return float((-1) ** swaps * np.prod(np.diag(packed)))


def inv(a, block_size: int | None = BLOCK_SIZE) -> np.ndarray:
    a = as_square(a)
    return solve(a, np.eye(a.shape[0]), block_size)


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
