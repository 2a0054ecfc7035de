"""L2-regularised logistic regression, binary and multinomial, by Newton's method with hand-derived derivatives.

Objective, as scikit-learn's LogisticRegression(penalty="l2", C=C) (intercept row not penalised):

    J(W) = 1/2 ||R W||_F^2 + C sum_i l_i,        X: (n, d+1) with a trailing column of ones, R = diag(1,..,1,0)

Link (Bishop, "Pattern Recognition and Machine Learning", 2006, sec. 4.3.2 and 4.3.4):
    binary      W: (d+1, 1),  p_i = sigmoid(x_i^T w),      l_i = log(1 + e^{z_i}) - y_i z_i
    multiclass  W: (d+1, K),  p_i = softmax(W^T x_i),      l_i = logsumexp(z_i) - z_{i, y_i}
Both links give the same gradient and Hessian formulas (Bishop eqs. 4.96-4.97 and 4.109-4.110), coded once:

    grad J = C X^T (P - Y) + R W
    H[(a, j), (b, k)] = C sum_i x_ia x_ib S_i[j, k] + [a = b, j = k] R_aa
    S_i = p_i (1 - p_i)  (binary)          S_i = diag(p_i) - p_i p_i^T  (multiclass)

Newton's method: W <- W - t H^{-1} grad, with t halved until the Armijo condition
J(W - t D) <= J(W) - 1e-4 t grad . D holds (Nocedal & Wright, 2006, eq. 3.4); stops when max |grad| < tol.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.checks import as_features, as_labels, require_fitted


def _link(z: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities P (n, K'), curvature S (n, K', K') and the log-partition term of l_i (l_i = that - y_i . z_i)."""
    if binary:
        p = 0.5 * (1 + np.tanh(0.5 * z))
        return p, (p * (1 - p))[:, :, None], np.logaddexp(0, z[:, 0])
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    p = np.exp(z - lse[:, None])
    return p, p[:, :, None] * (np.eye(z.shape[1]) - p[:, None, :]), lse


class LogisticRegression:
    def __init__(self, C: float = 1.0, fit_intercept: bool = True, tol: float = 1e-8, max_iter: int = 100):
        if C <= 0:
            raise UserError(f"C must be positive, got {C}")
        self.C, self.fit_intercept, self.tol, self.max_iter = C, fit_intercept, tol, max_iter

    def _design(self, x) -> np.ndarray:
        x = as_features(x)
        return np.hstack([x, np.ones((len(x), 1))]) if self.fit_intercept else x

    def _objective(self, w, x, y, mask):
        _, _, lse = _link(x @ w, self.binary_)
        return 0.5 * np.sum(mask * w * w) + self.C * np.sum(lse - np.sum(y * (x @ w), axis=1))

    def _derivatives(self, w, x, y, mask):
        p, s, _ = _link(x @ w, self.binary_)
        grad = self.C * x.T @ (p - y) + mask * w
        d, k = w.shape
        hess = np.empty((d, k, d, k))
        for j in range(k):
            for m in range(k):
                hess[:, j, :, m] = self.C * (x * s[:, j, m, None]).T @ x
        hess = hess.reshape(d * k, d * k) + np.diag(mask.reshape(-1) * np.ones(d * k))
        return grad, hess

    def fit(self, x, y) -> LogisticRegression:
        x = self._design(x)
        y = as_labels(y, len(x))
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise UserError("logistic regression needs at least two classes in y")
        self.binary_ = len(self.classes_) == 2
        targets = codes[:, None].astype(float) if self.binary_ else np.eye(len(self.classes_))[codes]
        w = np.zeros((x.shape[1], targets.shape[1]))
        mask = np.ones_like(w)
        if self.fit_intercept:
            mask[-1] = 0.0
        self.n_iter_ = 0
        for iteration in range(1, self.max_iter + 1):
            self.n_iter_ = iteration
            grad, hess = self._derivatives(w, x, targets, mask)
            if np.abs(grad).max() < self.tol:
                break
            step = np.linalg.lstsq(hess, grad.reshape(-1), rcond=None)[0].reshape(w.shape)
            f0, slope, t = self._objective(w, x, targets, mask), np.sum(grad * step), 1.0
            while self._objective(w - t * step, x, targets, mask) > f0 - 1e-4 * t * slope and t > 1e-10:
                t *= 0.5
            w = w - t * step
        coef = w[:-1] if self.fit_intercept else w
        self.coef_ = coef.T
        self.intercept_ = w[-1] if self.fit_intercept else np.zeros(w.shape[1])
        return self

    def decision_function(self, x) -> np.ndarray:
        require_fitted(self, "coef_")
        x = as_features(x, self.coef_.shape[1])
        z = x @ self.coef_.T + self.intercept_
        return z[:, 0] if self.binary_ else z

    def predict_proba(self, x) -> np.ndarray:
        z = self.decision_function(x)
        p = _link(z[:, None] if self.binary_ else z, self.binary_)[0]
        return np.hstack([1 - p, p]) if self.binary_ else p

    def predict(self, x) -> np.ndarray:
        proba = self.predict_proba(x)
        return self.classes_[proba.argmax(axis=1)]
