"""Householder QR, A = Q R (Householder, 1958; Golub & Van Loan, "Matrix Computations", Alg. 5.2.1).

For column k, with x = A[k:, k], the reflector

    H = I - 2 v v^T / (v^T v),    v = x - beta e_1,    beta = -sign(x_1) ||x||

maps x to beta e_1 (the sign avoids cancellation; it is LAPACK's geqrf convention, so R's diagonal and Q agree
with scipy.linalg.qr). H is applied to the trailing block as A <- A - (2 / v^T v) v (v^T A), never formed.
R is what is left of A; Q = H_1 H_2 ... H_k applied to the identity from the right end.

Least squares min ||A x - b|| for full-column-rank A (m >= n): R x = (Q^T b)[:n], with Q^T b = H_n ... H_1 b
computed by applying the reflectors to b (Golub & Van Loan, Alg. 5.3.2), Q never formed.
|R_kk| <= max(m, n) eps max|R_jj| means A is rank deficient: `lstsq` raises SingularMatrixError.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.linalg import SingularMatrixError, as_rhs, solve_triangular


def _householder(a: np.ndarray) -> tuple[np.ndarray, list]:
    r = a.copy()
    m, n = r.shape
    reflectors = []
    for k in range(min(m, n)):
        x = r[k:, k]
        tail = np.linalg.norm(x[1:])
        if tail == 0:  # already zero below the diagonal: H = I
            reflectors.append(None)
            continue
        beta = -np.copysign(np.hypot(x[0], tail), x[0])
        v = x.copy()
        v[0] -= beta
        scale = 2.0 / (v @ v)
        r[k:, k:] -= scale * np.outer(v, v @ r[k:, k:])
        r[k + 1:, k] = 0.0
        reflectors.append((v, scale))
    return r, reflectors


def qr(a, mode: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """mode "full": Q (m, m), R (m, n); "economic": Q (m, k), R (k, n) with k = min(m, n) (scipy's modes)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise UserError(f"qr needs a 2-D matrix, got shape {a.shape}")
    if mode not in ("full", "economic"):
        raise UserError(f"qr mode must be 'full' or 'economic', got {mode!r}")
    m, n = a.shape
    r, reflectors = _householder(a)
    cols = m if mode == "full" else min(m, n)
    q = np.eye(m, cols)
    for k in range(len(reflectors) - 1, -1, -1):
        if reflectors[k] is not None:
            v, scale = reflectors[k]
            q[k:] -= scale * np.outer(v, v @ q[k:])
    return q, r[:cols]


def lstsq(a, b) -> np.ndarray:
    """x minimising ||A x - b||_2 for A (m, n) with m >= n and full column rank."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < a.shape[1]:
        raise UserError(f"lstsq needs a 2-D matrix with at least as many rows as columns, got shape {a.shape}")
    b = as_rhs(b, a.shape[0])
    r, reflectors = _householder(a)
    n = a.shape[1]
    diag = np.abs(np.diag(r))
    k = int(np.argmin(diag))
    if diag[k] <= max(a.shape) * np.finfo(float).eps * max(diag.max(), np.finfo(float).tiny):
        raise SingularMatrixError(f"matrix is rank deficient: column {k} is a combination of the others")
    qtb = b.copy()
    for k, reflector in enumerate(reflectors):  # Q^T b = H_k ... H_1 b, without forming Q
        if reflector is not None:
            v, scale = reflector
            qtb[k:] -= scale * np.multiply.outer(v, v @ qtb[k:])
    return solve_triangular(r[:n], qtb[:n], lower=False)
