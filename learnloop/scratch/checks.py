"""Input checks shared by the scratch estimators: each failure is a one-line UserError naming the problem."""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError


def as_features(x, n_features: int | None = None) -> np.ndarray:
    """X as a finite float (n_samples, n_features) array, with the fitted feature count if given."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise UserError(f"X must be 2-D (n_samples, n_features), got shape {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise UserError(f"X has {x.shape[1]} features but the model was fitted with {n_features}")
    if not np.all(np.isfinite(x)):
        raise UserError("X contains NaN or Inf; impute or drop those values first")
    return x


def as_labels(y, n_samples: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n_samples,):
        raise UserError(f"y must have shape ({n_samples},), got {y.shape}")
    return y


def require_fitted(model, attribute: str) -> None:
    if not hasattr(model, attribute):
        raise UserError(f"{type(model).__name__} is not fitted yet: call fit(X, y) first")
