"""Central-difference numerical gradients (e.g. Nocedal & Wright, "Numerical Optimization", 2006, eq. 8.7).

    df/dx_k ~= (f(x + h e_k) - f(x - h e_k)) / (2 h)        truncation error O(h^2)

`numerical_gradient(f, x)` applies it to a scalar function of an array; `numerical_jacobian(f, x)` to an
array-valued one (shape f(x).shape + x.shape). `f` takes and returns NumPy arrays (or floats).
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError


def numerical_jacobian(f, x, h: float = 1e-6) -> np.ndarray:
    x = np.array(x, dtype=np.float64)
    flat = x.reshape(-1)
    columns = []
    for k in range(flat.size):
        saved = flat[k]
        flat[k] = saved + h
        plus = np.asarray(f(x), dtype=np.float64)
        flat[k] = saved - h
        minus = np.asarray(f(x), dtype=np.float64)
        flat[k] = saved
        columns.append((plus - minus) / (2 * h))
    out_shape = columns[0].shape if columns else np.shape(f(x))
    return np.stack(columns, axis=-1).reshape(out_shape + x.shape)


def numerical_gradient(f, x, h: float = 1e-6) -> np.ndarray:
    jac = numerical_jacobian(f, x, h)
    if jac.shape != np.shape(x):
        raise UserError(f"numerical_gradient needs a scalar function; f returned shape {jac.shape[:-np.ndim(x)]}")
    return jac
