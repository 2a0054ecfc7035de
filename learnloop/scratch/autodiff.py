"""Reverse-mode automatic differentiation on a tape (Linnainmaa, 1970; Wengert, 1964), as laid out in
Griewank & Walther, "Evaluating Derivatives" (2008), ch. 3.

Forward sweep: every primitive  v_i = phi_i(v_j, j in inputs(i))  is evaluated with NumPy by `apply`; if an
input is watched by an active `Tape`, the triple (phi_i, inputs, v_i) is appended to the tape.
Reverse sweep (`Tape.gradient`): starting from the seed  ybar = dL/dy  (ones by default), the records are
visited in reverse order and each adds its vector-Jacobian product to its inputs' adjoints:

    vbar_j += vjp_i(vbar_i) = vbar_i^T  d phi_i / d v_j

Broadcasting: when v_j of shape s was broadcast to the output shape, `unbroadcast` sums its adjoint over the
broadcast axes back to s.  `stop_gradient` is the identity whose vjp is None (no adjoint flows).

Every primitive is an `Op(name, forward, vjp)` in `OPS`, so a traced graph (`learnloop.scratch.graph`) can
re-run it by name. `forward(*arrays, **attrs)` returns the value; `vjp(g, out, *arrays, **attrs)` returns one
adjoint (or None) per input. Active tapes and tracers live on the stack `_RECORDERS`, pushed and popped only
by `Tape`'s `with` block and by `recording(...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from learnloop.errors import UserError


@dataclass(frozen=True)
class Op:
    name: str
    forward: Callable[..., np.ndarray]
    vjp: Callable[..., tuple]


OPS: dict[str, Op] = {}
_RECORDERS: list = []


def _register(name: str, forward: Callable, vjp: Callable) -> None:
    OPS[name] = Op(name, forward, vjp)


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum the adjoint `g` over the axes along which an input of `shape` was broadcast."""
    g = np.asarray(g)
    if g.shape == tuple(shape):
        return g
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def normalize_axis(axis, ndim: int):
    if axis is None:
        return None
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    return tuple(sorted(int(a) % ndim for a in axes))


def expand_reduced(g: np.ndarray, x_shape: tuple, axis, keepdims: bool) -> np.ndarray:
    """Undo a reduction over `axis`: re-insert the reduced axes and broadcast back to `x_shape`."""
    if axis is not None and not keepdims:
        g = np.expand_dims(g, axis)
    return np.broadcast_to(g, x_shape)


def _swap(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _matmul_vjp(g, out, a, b):
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = np.expand_dims(g, -2) if a.ndim == 1 else g
    g2 = np.expand_dims(g2, -1) if b.ndim == 1 else g2
    ga, gb = g2 @ _swap(b2), _swap(a2) @ g2
    ga = ga[..., 0, :] if a.ndim == 1 else ga
    gb = gb[..., :, 0] if b.ndim == 1 else gb
    return ga, gb


def _getitem_vjp(g, out, x, index):
    gx = np.zeros(x.shape, dtype=g.dtype)
    np.add.at(gx, index, g)
    return (gx,)


def _max_vjp(g, out, x, axis, keepdims):
    """Adjoint split evenly between tied maxima (as torch.amax does)."""
    hit = x == expand_reduced(out, x.shape, axis, keepdims)
    return (hit * expand_reduced(g, x.shape, axis, keepdims) / hit.sum(axis=axis, keepdims=True),)


def _log_softmax(x, axis):
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise UserError(f"kernel {kernel} with padding {padding} does not fit an input of size {size}")
    return out


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """(N, C, H, W) -> columns (N*OH*OW, C*kh*kw): row (n, oh, ow) holds the patch under output pixel (oh, ow)."""
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def col2im(cols: np.ndarray, x_shape: tuple, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """Adjoint of `im2col`: add every column entry back onto the input pixel it was copied from."""
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    patches = cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += patches[:, :, i, j]
    return xp[:, :, padding:padding + h, padding:padding + w]


def _pool_argmax(x, kernel, stride):
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kernel, stride, 0), conv_output_size(w, kernel, stride, 0)
    win = sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride][:, :, :oh, :ow]
    flat = win.reshape(n, c, oh, ow, kernel * kernel)
    return flat, flat.argmax(axis=-1)


def _maxpool_forward(x, kernel, stride):
    flat, arg = _pool_argmax(x, kernel, stride)
    return np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]


def _maxpool_vjp(g, out, x, kernel, stride):
    """Route each output adjoint to the input pixel that won its window."""
    _, arg = _pool_argmax(x, kernel, stride)
    n, c, oh, ow = arg.shape
    rows = np.arange(oh)[:, None] * stride + arg // kernel
    cols = np.arange(ow)[None, :] * stride + arg % kernel
    index = (np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols)
    gx = np.zeros(x.shape, dtype=g.dtype)
    if stride >= kernel:  # windows do not overlap: every input pixel is hit at most once
        gx[index] = g
    else:
        np.add.at(gx, index, g)
    return (gx,)


_register("add", np.add, lambda g, out, a, b: (g, g))
_register("sub", np.subtract, lambda g, out, a, b: (g, -g))
_register("mul", np.multiply, lambda g, out, a, b: (g * b, g * a))
_register("div", np.divide, lambda g, out, a, b: (g / b, -g * a / (b * b)))
_register("neg", np.negative, lambda g, out, x: (-g,))
_register("pow", lambda x, p: x ** p, lambda g, out, x, p: (g * p * x ** (p - 1),))
_register("exp", np.exp, lambda g, out, x: (g * out,))
_register("log", np.log, lambda g, out, x: (g / x,))
_register("sqrt", np.sqrt, lambda g, out, x: (g * 0.5 / out,))
_register("abs", np.abs, lambda g, out, x: (g * np.sign(x),))
_register("tanh", np.tanh, lambda g, out, x: (g * (1 - out * out),))
_register("sigmoid", lambda x: 0.5 * (1 + np.tanh(0.5 * x)), lambda g, out, x: (g * out * (1 - out),))
_register("relu", lambda x: np.maximum(x, 0), lambda g, out, x: (g * (x > 0),))
_register("matmul", np.matmul, _matmul_vjp)
_register("sum", lambda x, axis, keepdims: x.sum(axis=axis, keepdims=keepdims),
          lambda g, out, x, axis, keepdims: (expand_reduced(g, x.shape, axis, keepdims),))
_register("mean", lambda x, axis, keepdims: x.mean(axis=axis, keepdims=keepdims),
          lambda g, out, x, axis, keepdims: (expand_reduced(g, x.shape, axis, keepdims) * (out.size / x.size),))
_register("max", lambda x, axis, keepdims: x.max(axis=axis, keepdims=keepdims), _max_vjp)
_register("reshape", lambda x, shape: x.reshape(shape), lambda g, out, x, shape: (g.reshape(x.shape),))
_register("transpose", lambda x, axes: x.transpose(axes),
          lambda g, out, x, axes: (g.transpose(np.argsort(axes)),))
_register("getitem", lambda x, index: x[index], _getitem_vjp)
_register("log_softmax", _log_softmax,
          lambda g, out, x, axis: (g - np.exp(out) * g.sum(axis=axis, keepdims=True),))
_register("im2col", im2col, lambda g, out, x, kh, kw, stride, padding: (col2im(g, x.shape, kh, kw, stride, padding),))
_register("maxpool2d", _maxpool_forward, _maxpool_vjp)
_register("stop_gradient", lambda x: x.copy(), lambda g, out, x: (None,))


class ArrayLike:
    """What a value-carrying type (Tensor, Dual) exposes of its `value` array, and `.T` via its transpose."""

    value: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.value.shape

    @property
    def ndim(self) -> int:
        return self.value.ndim

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def size(self) -> int:
        return self.value.size

    @property
    def T(self):
        return self.transpose()


class Tensor(ArrayLike):
    """A NumPy array that records the ops applied to it on every active Tape that watches it.

    `trainable=True` marks a parameter: tapes watch it without `tape.watch`.
    """

    __array_ufunc__ = None  # make NumPy defer `array + tensor` etc. to the Tensor's reflected methods

    def __init__(self, value, trainable: bool = False):
        value = np.asarray(value)
        self.value = value if np.issubdtype(value.dtype, np.floating) else value.astype(np.float64)
        self.trainable = trainable

    def __repr__(self) -> str:
        return f"Tensor({self.value!r}{', trainable=True' if self.trainable else ''})"


    def numpy(self) -> np.ndarray:
        return self.value

    def _other(self, other) -> Tensor:
        if isinstance(other, Tensor):
            return other
        return Tensor(np.asarray(other, dtype=self.dtype if np.isscalar(other) else None))

    def __add__(self, other):
        return apply("add", self, self._other(other))

    def __radd__(self, other):
        return apply("add", self._other(other), self)

    def __sub__(self, other):
        return apply("sub", self, self._other(other))

    def __rsub__(self, other):
        return apply("sub", self._other(other), self)

    def __mul__(self, other):
        return apply("mul", self, self._other(other))

    def __rmul__(self, other):
        return apply("mul", self._other(other), self)

    def __truediv__(self, other):
        return apply("div", self, self._other(other))

    def __rtruediv__(self, other):
        return apply("div", self._other(other), self)

    def __matmul__(self, other):
        return apply("matmul", self, self._other(other))

    def __rmatmul__(self, other):
        return apply("matmul", self._other(other), self)

    def __neg__(self):
        return apply("neg", self)

    def __pow__(self, p: float):
        if isinstance(p, Tensor) or not np.isscalar(p):
            raise UserError("Tensor ** p supports a constant scalar exponent p only")
        return apply("pow", self, p=float(p))

    def __getitem__(self, index):
        return apply("getitem", self, index=index)

    def exp(self):
        return apply("exp", self)

    def log(self):
        return apply("log", self)

    def sqrt(self):
        return apply("sqrt", self)

    def abs(self):
        return apply("abs", self)

    def tanh(self):
        return apply("tanh", self)

    def sigmoid(self):
        return apply("sigmoid", self)

    def relu(self):
        return apply("relu", self)

    def sum(self, axis=None, keepdims: bool = False):
        return apply("sum", self, axis=normalize_axis(axis, self.ndim), keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return apply("mean", self, axis=normalize_axis(axis, self.ndim), keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False):
        return apply("max", self, axis=normalize_axis(axis, self.ndim), keepdims=keepdims)

    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and not np.isscalar(shape[0]) else tuple(shape)
        return apply("reshape", self, shape=shape)

    def transpose(self, *axes):
        axes = tuple(axes[0]) if len(axes) == 1 and not np.isscalar(axes[0]) else tuple(axes)
        return apply("transpose", self, axes=axes or tuple(reversed(range(self.ndim))))

    def log_softmax(self, axis: int = -1):
        return apply("log_softmax", self, axis=int(axis) % self.ndim)

    def softmax(self, axis: int = -1):
        return self.log_softmax(axis).exp()


def as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


@contextmanager
def recording(recorder):
    """Put `recorder` (anything with record(op, inputs, attrs, out)) on the stack for the `with` block."""
    _RECORDERS.append(recorder)
    try:
        yield recorder
    finally:
        _RECORDERS.remove(recorder)


def apply(name: str, *inputs, **attrs) -> Tensor:
    """Evaluate primitive `name` on `inputs` and record it on every active tape and tracer."""
    op = OPS[name]
    tensors = tuple(as_tensor(x) for x in inputs)
    out = Tensor(op.forward(*(t.value for t in tensors), **attrs))
    for recorder in _RECORDERS:
        recorder.record(op, tensors, attrs, out)
    return out


def stop_gradient(x) -> Tensor:
    return apply("stop_gradient", x)


class Tape:
    """Records watched computations inside `with Tape() as tape:`; `tape.gradient(y, [x])` runs the reverse sweep.

    A non-persistent tape can compute one gradient and is then released; `persistent=True` keeps the records.
    """

    def __init__(self, persistent: bool = False, watch_accessed_variables: bool = True):
        self.persistent = persistent
        self.watch_accessed_variables = watch_accessed_variables
        self._records: list[tuple[Op, tuple, dict, Tensor]] = []
        self._watched: dict[int, Tensor] = {}
        self._used = False

    def __enter__(self):
        _RECORDERS.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _RECORDERS.remove(self)

    def watch(self, *tensors: Tensor) -> None:
        for t in tensors:
            if not isinstance(t, Tensor):
                raise UserError(f"tape.watch expects Tensors, got {type(t).__name__}")
            self._watched[id(t)] = t

    def _is_watched(self, t: Tensor) -> bool:
        return id(t) in self._watched or (self.watch_accessed_variables and t.trainable)

    def record(self, op: Op, inputs: tuple, attrs: dict, out: Tensor) -> None:
        if any(self._is_watched(t) for t in inputs):
            self._records.append((op, inputs, attrs, out))
            self._watched[id(out)] = out

    def gradient(self, target: Tensor, sources, output_gradient=None, unconnected: str = "none"):
        """d target / d source for each source; None (zeros with unconnected="zero") if unwatched or unconnected."""
        if self._used and not self.persistent:
            raise UserError("a non-persistent Tape can compute one gradient; use Tape(persistent=True)")
        self._used = True
        single = isinstance(sources, Tensor)
        sources = [sources] if single else list(sources)
        seed = np.ones_like(target.value) if output_gradient is None else np.asarray(output_gradient)
        if seed.shape != target.shape:
            raise UserError(f"output_gradient shape {seed.shape} does not match target shape {target.shape}")
        adjoint = {id(target): seed}
        for op, inputs, attrs, out in reversed(self._records):
            g = adjoint.get(id(out))
            if g is None:
                continue
            grads = op.vjp(g, out.value, *(t.value for t in inputs), **attrs)
            for t, gt in zip(inputs, grads):
                if gt is not None:
                    gt = unbroadcast(gt, t.shape)
                    adjoint[id(t)] = adjoint[id(t)] + gt if id(t) in adjoint else gt
        result = []
        for s in sources:
            g = adjoint.get(id(s)) if self._is_watched(s) else None
            if g is None and unconnected == "zero":
                g = np.zeros_like(s.value)
            result.append(None if g is None else np.array(g, dtype=s.dtype))
        if not self.persistent:
            self._records, self._watched = [], {}
        return result[0] if single else result

    def jacobian(self, target: Tensor, source: Tensor) -> np.ndarray:
        """Full Jacobian, shape target.shape + source.shape, one reverse sweep per target element."""
        if not self.persistent:
            raise UserError("tape.jacobian needs Tape(persistent=True): it runs one reverse sweep per output")
        rows = []
        for k in range(target.size):
            seed = np.zeros(target.size, dtype=target.dtype)
            seed[k] = 1.0
            rows.append(self.gradient(target, [source], seed.reshape(target.shape), unconnected="zero")[0])
        return np.stack(rows).reshape(target.shape + source.shape)
