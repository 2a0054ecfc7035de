"""Triangular substitution, the shared last step of the LU, QR and Cholesky solvers, and their error types.

Forward substitution for lower-triangular L (Golub & Van Loan, "Matrix Computations", 4th ed., Alg. 3.1.1):
    x_i = (b_i - sum_{j<i} L_ij x_j) / L_ii,          i = 0, ..., n-1
Back substitution for upper-triangular U (Alg. 3.1.2):
    x_i = (b_i - sum_{j>i} U_ij x_j) / U_ii,          i = n-1, ..., 0
Each step is one row-times-matrix product, so b may hold many right-hand sides as columns.

Blocked substitution (G&VL section 3.1, "block" forward substitution; LAPACK's dtrsm): with the rows cut
into blocks I_1, I_2, ... of `block_size` rows, block k of x is
    x_{I_k} = L_{I_k I_k}^{-1} (b_{I_k} - L_{I_k, I_<k} x_{I_<k})
where the bracket is one matrix product and L_{I_k I_k}^{-1} is the row loop above on a small block (back
substitution: the same from the last block up).
`block_size=None` (or 1) runs the row loop on the whole matrix: the readable reference.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError

BLOCK_SIZE = 64  # rows per block of the blocked substitution; default panel width of LU and Cholesky (QR: 32)


class SingularMatrixError(UserError, np.linalg.LinAlgError):
    """The matrix is singular (or rank deficient) to working precision."""


class NotPositiveDefiniteError(UserError, np.linalg.LinAlgError):
    """Cholesky met a non-positive pivot: the matrix is not positive definite."""


def as_square(a, name: str = "matrix") -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise UserError(f"{name} must be square 2-D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise UserError(f"{name} contains NaN or Inf")
    return a


def as_rhs(b, n: int) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    if b.ndim not in (1, 2) or b.shape[0] != n:
        raise UserError(f"right-hand side must have {n} rows, got shape {b.shape}")
    return b


def check_block_size(block_size: int | None) -> int:
    """0 for the unblocked reference (None or 1), else the block size; bad values are a UserError."""
    if block_size is None:
        return 0
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise UserError(f"block_size must be a positive integer or None, got {block_size!r}")
    return 0 if block_size == 1 else int(block_size)


def solve_triangular(t, b, lower: bool, unit_diagonal: bool = False,
                     block_size: int | None = BLOCK_SIZE) -> np.ndarray:
    """Solve T x = b for triangular T by forward (lower=True) or back substitution (only T's triangle is read)."""
    t = as_square(t, "triangular matrix")
    n = t.shape[0]
    x = np.array(as_rhs(b, n))  # a copy: solved in place
    diag = np.ones(n) if unit_diagonal else np.diag(t)
    if np.any(diag == 0):
        raise SingularMatrixError(f"triangular matrix is singular: zero on the diagonal at {int(np.argmin(np.abs(diag)))}")
    substitute(t, x, lower, unit_diagonal, block_size)
    return x


def substitute(t: np.ndarray, x: np.ndarray, lower: bool, unit_diagonal: bool = False,
               block_size: int | None = BLOCK_SIZE) -> None:
    """Overwrite x (n,) or (n, k) with T^{-1} x, no checks: the kernel `solve_triangular` and the solvers share."""
    n = t.shape[0]
    nb = check_block_size(block_size) or n
    diag = None if unit_diagonal else np.diag(t)
    if lower:
        for i0 in range(0, n, nb):
            i1 = min(i0 + nb, n)
            if i0:
                x[i0:i1] -= t[i0:i1, :i0] @ x[:i0]
            _substitute_block(t, x, diag, i0, i1, lower)
    else:
        for i1 in range(n, 0, -nb):
            i0 = max(i1 - nb, 0)
            if i1 < n:
                x[i0:i1] -= t[i0:i1, i1:] @ x[i1:]
            _substitute_block(t, x, diag, i0, i1, lower)


def _substitute_block(t, x, diag, i0: int, i1: int, lower: bool) -> None:
    """The row loop of Alg. 3.1.1 (lower) / 3.1.2 on rows i0:i1, once rows outside the block are eliminated."""
    for i in range(i0, i1) if lower else range(i1 - 1, i0 - 1, -1):
        done = slice(i0, i) if lower else slice(i + 1, i1)
        x[i] -= t[i, done] @ x[done]
        if diag is not None:
            x[i] /= diag[i]
