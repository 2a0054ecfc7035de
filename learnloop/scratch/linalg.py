"""Triangular substitution, the shared last step of the LU, QR and Cholesky solvers, and their error types.

Forward substitution for lower-triangular L (Golub & Van Loan, "Matrix Computations", 4th ed., Alg. 3.1.1):
    x_i = (b_i - sum_{j<i} L_ij x_j) / L_ii,          i = 0, ..., n-1
Back substitution for upper-triangular U (Alg. 3.1.2):
    x_i = (b_i - sum_{j>i} U_ij x_j) / U_ii,          i = n-1, ..., 0
Each step is one row-times-matrix product, so b may hold many right-hand sides as columns.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError


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


def solve_triangular(t, b, lower: bool, unit_diagonal: bool = False) -> np.ndarray:
    """Solve T x = b for triangular T by forward (lower=True) or back substitution."""
    t = as_square(t, "triangular matrix")
    n = t.shape[0]
    x = as_rhs(b, n).copy()
    diag = np.ones(n) if unit_diagonal else np.diag(t)
    if np.any(diag == 0):
        raise SingularMatrixError(f"triangular matrix is singular: zero on the diagonal at {int(np.argmin(np.abs(diag)))}")
    rows = range(n) if lower else range(n - 1, -1, -1)
    for i in rows:
        done = slice(0, i) if lower else slice(i + 1, n)
        x[i] = (x[i] - t[i, done] @ x[done]) / diag[i]
    return x
