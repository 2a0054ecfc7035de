"""Forward-mode automatic differentiation with dual numbers (Clifford, 1873; Wengert, 1964).

A dual number x + eps t with eps^2 = 0 satisfies f(x + eps t) = f(x) + eps J_f(x) t, so carrying the tangent t
(`Dual.tangent`) beside the primal x (`Dual.value`) yields the Jacobian-vector product J t in one forward pass.
Tangent rules, with ' the tangent:

    (a + b)' = a' + b'          (a b)' = a' b + a b'          (a / b)' = (a' - (a / b) b') / b
    (x^p)' = p x^(p-1) x'       exp(x)' = exp(x) x'           log(x)' = x' / x
    tanh(x)' = (1 - tanh^2) x'  sigmoid(x)' = s (1 - s) x'    relu(x)' = [x > 0] x'     sqrt(x)' = x' / (2 sqrt x)
    (A @ B)' = A' @ B + A @ B'  max(x)' = mean of x' over the maxima
    log_softmax(x)' = x' - sum(softmax(x) x')
    linear maps L (sum, mean, reshape, transpose, indexing, im2col): L(x)' = L(x')

`jvp(f, x, t)` returns (f(x), J t); `jacfwd(f, x)` builds J column by column (one pass per input element).
The functions `f` use the same methods as `learnloop.scratch.autodiff.Tensor`, so one `f` runs in both modes.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.autodiff import OPS, ArrayLike, expand_reduced, im2col, normalize_axis


class Dual(ArrayLike):
    """Primal value and tangent, both NumPy arrays of the same shape."""

    __array_ufunc__ = None

    def __init__(self, value, tangent=None):
        value = np.asarray(value)
        self.value = value if np.issubdtype(value.dtype, np.floating) else value.astype(np.float64)
        self.tangent = np.zeros_like(self.value) if tangent is None else np.asarray(tangent, dtype=self.value.dtype)
        if self.tangent.shape != self.value.shape:
            raise UserError(f"tangent shape {self.tangent.shape} does not match value shape {self.value.shape}")

    def __repr__(self) -> str:
        return f"Dual({self.value!r}, tangent={self.tangent!r})"


    def _other(self, other) -> Dual:
        if isinstance(other, Dual):
            return other
        return Dual(np.asarray(other, dtype=self.dtype if np.isscalar(other) else None))

    def _linear(self, name: str, **attrs) -> Dual:
        f = OPS[name].forward
        return Dual(f(self.value, **attrs), f(self.tangent, **attrs))

    def __add__(self, other):
        o = self._other(other)
        return Dual(self.value + o.value, self.tangent + o.tangent)

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        o = self._other(other)
        return Dual(self.value - o.value, self.tangent - o.tangent)

    def __rsub__(self, other):
        return self._other(other) - self

    def __mul__(self, other):
        o = self._other(other)
        return Dual(self.value * o.value, self.tangent * o.value + self.value * o.tangent)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        o = self._other(other)
        q = self.value / o.value
        return Dual(q, (self.tangent - q * o.tangent) / o.value)

    def __rtruediv__(self, other):
        return self._other(other) / self

    def __matmul__(self, other):
        o = self._other(other)
        return Dual(self.value @ o.value, self.tangent @ o.value + self.value @ o.tangent)

    def __rmatmul__(self, other):
        return self._other(other) @ self

    def __neg__(self):
        return Dual(-self.value, -self.tangent)

    def __pow__(self, p: float):
        if isinstance(p, Dual) or not np.isscalar(p):
            raise UserError("Dual ** p supports a constant scalar exponent p only")
        return Dual(self.value ** p, p * self.value ** (p - 1) * self.tangent)

    def __getitem__(self, index):
        return self._linear("getitem", index=index)

    def exp(self):
        e = np.exp(self.value)
        return Dual(e, e * self.tangent)

    def log(self):
        return Dual(np.log(self.value), self.tangent / self.value)

    def sqrt(self):
        r = np.sqrt(self.value)
        return Dual(r, self.tangent * 0.5 / r)

    def abs(self):
        return Dual(np.abs(self.value), np.sign(self.value) * self.tangent)

    def tanh(self):
        t = np.tanh(self.value)
        return Dual(t, (1 - t * t) * self.tangent)

    def sigmoid(self):
        s = OPS["sigmoid"].forward(self.value)
        return Dual(s, s * (1 - s) * self.tangent)

    def relu(self):
        return Dual(np.maximum(self.value, 0), (self.value > 0) * self.tangent)

    def sum(self, axis=None, keepdims: bool = False):
        return self._linear("sum", axis=normalize_axis(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return self._linear("mean", axis=normalize_axis(axis, self.ndim), keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False):
        axis = normalize_axis(axis, self.ndim)
        m = self.value.max(axis=axis, keepdims=keepdims)
        hit = self.value == expand_reduced(m, self.shape, axis, keepdims)
        tangent = (hit * self.tangent).sum(axis=axis, keepdims=keepdims) / hit.sum(axis=axis, keepdims=keepdims)
        return Dual(m, tangent)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and not np.isscalar(shape[0]) else tuple(shape)
        return self._linear("reshape", shape=shape)

    def transpose(self, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and not np.isscalar(axes[0]) else tuple(axes)
        return self._linear("transpose", axes=axes or tuple(reversed(range(self.ndim))))

    def log_softmax(self, axis: int = -1):
        out = OPS["log_softmax"].forward(self.value, axis=axis)
        return Dual(out, self.tangent - (np.exp(out) * self.tangent).sum(axis=axis, keepdims=True))

    def softmax(self, axis: int = -1):
        return self.log_softmax(axis).exp()

    def im2col(self, kh: int, kw: int, stride: int = 1, padding: int = 0):
        return Dual(im2col(self.value, kh, kw, stride, padding), im2col(self.tangent, kh, kw, stride, padding))


def jvp(f, x, t):
    """(f(x), J_f(x) t) for array-valued x and tangent t of the same shape, in one forward pass."""
    out = f(Dual(x, t))
    if not isinstance(out, Dual):
        raise UserError(f"jvp: f must return the Dual it computed, got {type(out).__name__}")
    return out.value, out.tangent


def jacfwd(f, x) -> np.ndarray:
    """Jacobian of f at x, shape f(x).shape + x.shape, built one input direction at a time."""
    x = np.asarray(x, dtype=np.float64)
    columns, value = [], None
    for k in range(x.size):
        e = np.zeros(x.size)
        e[k] = 1.0
        value, col = jvp(f, x, e.reshape(x.shape))
        columns.append(col)
    return np.stack(columns, axis=-1).reshape(np.shape(value) + x.shape)
