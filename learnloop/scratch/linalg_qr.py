"""Householder QR, A = Q R (Householder, 1958; Golub & Van Loan, "Matrix Computations", Alg. 5.2.1).

For column k, with x = A[k:, k], the reflector

    H = I - 2 v v^T / (v^T v),    v = x - beta e_1,    beta = -sign(x_1) ||x||

maps x to beta e_1 (the sign avoids cancellation; it is LAPACK's geqrf convention, so R's diagonal and Q agree
with scipy.linalg.qr). H is applied to the trailing block as A <- A - (2 / v^T v) v (v^T A), never formed.
R is what is left of A; Q = H_1 H_2 ... H_k applied to the identity from the right end.

Least squares min ||A x - b|| for full-column-rank A (m >= n): R x = (Q^T b)[:n], with Q^T b = H_n ... H_1 b
computed by applying the reflectors to b (Golub & Van Loan, Alg. 5.3.2), Q never formed.
|R_kk| <= max(m, n) eps max|R_jj| means A is rank deficient: `lstsq` raises SingularMatrixError.

Blocked Householder QR with the compact WY representation (Schreiber & Van Loan, "A storage-efficient WY
representation for products of Householder transformations", 1989; G&VL section 5.2, block Householder QR;
LAPACK's dgeqrf + dlarft + dlarfb). The columns are cut into panels of `block_size`; the panel's reflectors
H_i = I - tau_i v_i v_i^T (from the kernel above, tau_i = 2 / v_i^T v_i, v_i zero above row i) multiply to

    H_1 H_2 ... H_w = I - V T V^T,    T upper triangular:  T_ii = tau_i,  T[:i, i] = -tau_i T[:i, :i] V[:, :i]^T v_i

(one product G = V^T V gives all the V[:, :i]^T v_i). The trailing columns get Q_panel^T C = C - V (T^T (V^T C))
and Q is accumulated backwards, Q[k:, k:] <- Q[k:, k:] - V (T (V^T Q[k:, k:])): three matrix products per
panel instead of one rank-1 update per column. R and Q equal the unblocked ones up to rounding, with the same
sign convention (LAPACK's: R's diagonal and Q's columns agree with scipy.linalg.qr).
`block_size=None` (or 1) runs the kernel on the whole matrix: the readable reference.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.linalg import SingularMatrixError, as_rhs, check_block_size, substitute

BLOCK_SIZE = 32  # panel width: the panel kernel is rank-1 updates, so narrower panels than LU's pay off


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


def _blocked(a: np.ndarray, nb: int) -> tuple[np.ndarray, list]:
    """R and the panels' (k, V, T): the reflectors of panel k:k+w in compact WY form, rows k: of V."""
    r = a.copy()
    m, n = r.shape
    panels = []
    for k in range(0, min(m, n), nb):
        e = min(k + nb, n)
        r[k:, k:e], reflectors = _householder(r[k:, k:e])
        w = len(reflectors)
        v, tau = np.zeros((m - k, w)), np.zeros(w)
        for i, reflector in enumerate(reflectors):
            if reflector is not None:  # else H_i = I: v_i = 0, tau_i = 0
                v[i:, i], tau[i] = reflector
        gram, t = v.T @ v, np.zeros((w, w))
        for i in range(w):
            t[:i, i] = -tau[i] * (t[:i, :i] @ gram[:i, i])
            t[i, i] = tau[i]
        if e < n:
            r[k:, e:] -= v @ (t.T @ (v.T @ r[k:, e:]))
        panels.append((k, v, t))
    return r, panels


def qr(a, mode: str = "full", block_size: int | None = BLOCK_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """mode "full": Q (m, m), R (m, n); "economic": Q (m, k), R (k, n) with k = min(m, n) (scipy's modes)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise UserError(f"qr needs a 2-D matrix, got shape {a.shape}")
    if mode not in ("full", "economic"):
        raise UserError(f"qr mode must be 'full' or 'economic', got {mode!r}")
    m, n = a.shape
    nb = check_block_size(block_size)
    cols = m if mode == "full" else min(m, n)
    q = np.eye(m, cols)
    if nb:
        r, panels = _blocked(a, nb)
        for k, v, t in reversed(panels):  # Q = Q_1 Q_2 ... applied to I from the right end
            q[k:, k:] -= v @ (t @ (v.T @ q[k:, k:]))
        return q, r[:cols]
    r, reflectors = _householder(a)
    for k in range(len(reflectors) - 1, -1, -1):
        if reflectors[k] is not None:
            v, scale = reflectors[k]
            q[k:] -= scale * np.outer(v, v @ q[k:])
    return q, r[:cols]


def lstsq(a, b, block_size: int | None = BLOCK_SIZE) -> np.ndarray:
    """x minimising ||A x - b||_2 for A (m, n) with m >= n and full column rank."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < a.shape[1]:
        raise UserError(f"lstsq needs a 2-D matrix with at least as many rows as columns, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise UserError("matrix contains NaN or Inf")
    b = as_rhs(b, a.shape[0])
    nb = check_block_size(block_size)
    r, factors = _blocked(a, nb) if nb else _householder(a)
    n = a.shape[1]
    diag = np.abs(np.diag(r))
    k = int(np.argmin(diag))
    if diag[k] <= max(a.shape) * np.finfo(float).eps * max(diag.max(), np.finfo(float).tiny):
        raise SingularMatrixError(f"matrix is rank deficient: column {k} is a combination of the others")
    qtb = b.copy()
    if nb:
        for k, v, t in factors:  # Q^T b = Q_p^T ... Q_1^T b, Q_j^T = I - V T^T V^T
            qtb[k:] -= v @ (t.T @ (v.T @ qtb[k:]))
    else:
        for k, reflector in enumerate(factors):  # Q^T b = H_k ... H_1 b, without forming Q
            if reflector is not None:
                v, scale = reflector
                qtb[k:] -= scale * np.multiply.outer(v, v @ qtb[k:])
    x = qtb[:n].copy()
    substitute(r[:n], x, lower=False, block_size=block_size)
    return x
