"""Neural-network layers on the scratch autodiff Tensor, in torch.nn's parameter layout.

    Linear        y = x W^T + b                                W: (out, in), init U(-1/sqrt(in), 1/sqrt(in))
    Conv2d        im2col (Chellapilla, Puri & Simard, 2006): Y = cols(X) W_mat^T + b, where cols(X) has one
                  row per output pixel holding its C*kh*kw patch and W_mat = W.reshape(out, C*kh*kw)
    MaxPool2d     y = max over each kernel x kernel window (stride defaults to the kernel size)
    BatchNorm     (Ioffe & Szegedy, 2015) xhat = (x - mu_B) / sqrt(var_B + eps), y = gamma xhat + beta;
                  statistics over every axis but the channel axis 1; in training the running estimates move as
                  r <- (1 - momentum) r + momentum s, with the unbiased batch variance (n / (n - 1)) var_B;
                  in eval mode mu, var are the running estimates
    Dropout       (Srivastava et al., 2014), inverted: y = x * m / (1 - p), m ~ Bernoulli(1 - p); identity in eval
    activations   relu(x) = max(x, 0), sigmoid(x) = 1 / (1 + e^-x), tanh, softmax(x)_k = e^x_k / sum_j e^x_j
    cross_entropy L = -(1/N) sum_n log softmax(z_n)_{y_n}

Backward passes come from the tape (`learnloop.scratch.autodiff`); only forward code lives here.
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.autodiff import Tensor, apply, conv_output_size


def relu(x: Tensor) -> Tensor:
    return x.relu()


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    return x.softmax(axis)


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean negative log-likelihood of integer class `targets` under softmax(logits), like F.cross_entropy."""
    targets = np.asarray(targets)
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise UserError(f"cross_entropy needs logits (N, K) and targets (N,), got {logits.shape} and {targets.shape}")
    if targets.min() < 0 or targets.max() >= logits.shape[1]:
        raise UserError(f"cross_entropy targets must lie in [0, {logits.shape[1]})")
    onehot = np.eye(logits.shape[1], dtype=logits.dtype)[targets]
    return -(logits.log_softmax(axis=1) * onehot).sum(axis=1).mean()


class Module:
    """Holds trainable Tensors and sub-modules as attributes; `parameters()` finds them in attribute order."""

    training = True

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, x) -> Tensor:
        return self.forward(x if isinstance(x, Tensor) else Tensor(x))

    def _children(self):
        for value in vars(self).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            yield from (v for v in items if isinstance(v, (Module, Tensor)))

    def parameters(self) -> list[Tensor]:
        params = []
        for child in self._children():
            if isinstance(child, Module):
                params.extend(child.parameters())
            elif child.trainable:
                params.append(child)
        return params

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for child in self._children():
            if isinstance(child, Module):
                child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)


def _uniform(rng: np.random.Generator, bound: float, shape: tuple, dtype) -> Tensor:
    return Tensor(rng.uniform(-bound, bound, size=shape).astype(dtype), trainable=True)


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None, dtype=np.float32):
        rng = rng if rng is not None else np.random.default_rng()
        bound = 1.0 / np.sqrt(in_features)
        self.weight = _uniform(rng, bound, (out_features, in_features), dtype)
        self.bias = _uniform(rng, bound, (out_features,), dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.weight.shape[1]:
            raise UserError(f"Linear expects {self.weight.shape[1]} input features, got shape {x.shape}")
        y = x @ self.weight.T
        return y + self.bias if self.bias is not None else y


class Conv2d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, rng=None, dtype=np.float32):
        rng = rng if rng is not None else np.random.default_rng()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        bound = 1.0 / np.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = _uniform(rng, bound, (out_channels, in_channels, kernel_size, kernel_size), dtype)
        self.bias = _uniform(rng, bound, (out_channels,), dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        out_c, in_c, k, _ = self.weight.shape
        if x.ndim != 4 or x.shape[1] != in_c:
            raise UserError(f"Conv2d expects input (N, {in_c}, H, W), got shape {x.shape}")
        n, _, h, w = x.shape
        oh, ow = conv_output_size(h, k, self.stride, self.padding), conv_output_size(w, k, self.stride, self.padding)
        cols = apply("im2col", x, kh=k, kw=k, stride=self.stride, padding=self.padding)
        y = cols @ self.weight.reshape(out_c, in_c * k * k).T
        y = y + self.bias if self.bias is not None else y
        return y.reshape(n, oh, ow, out_c).transpose(0, 3, 1, 2)


class MaxPool2d(Module):
    def __init__(self, kernel_size: int, stride: int | None = None):
        self.kernel_size, self.stride = kernel_size, stride or kernel_size

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise UserError(f"MaxPool2d expects input (N, C, H, W), got shape {x.shape}")
        return apply("maxpool2d", x, kernel=self.kernel_size, stride=self.stride)


class BatchNorm(Module):
    """BatchNorm over (N, C) or (N, C, H, W) input: torch's BatchNorm1d and BatchNorm2d in one class."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float32):
        self.eps, self.momentum = eps, momentum
        self.weight = Tensor(np.ones(num_features, dtype=dtype), trainable=True)
        self.bias = Tensor(np.zeros(num_features, dtype=dtype), trainable=True)
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        c = self.weight.shape[0]
        if x.ndim not in (2, 4) or x.shape[1] != c:
            raise UserError(f"BatchNorm expects input (N, {c}) or (N, {c}, H, W), got shape {x.shape}")
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, c) + (1,) * (x.ndim - 2)
        if self.training:
            n = x.size // c
            if n < 2:
                raise UserError("BatchNorm in training mode needs more than one value per channel")
            mean = x.mean(axis=axes, keepdims=True)
            centred = x - mean
            var = (centred * centred).mean(axis=axes, keepdims=True)
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mean.value.reshape(c)
            self.running_var = (1 - m) * self.running_var + m * var.value.reshape(c) * n / (n - 1)
        else:
            centred = x - self.running_mean.reshape(shape)
            var = Tensor(self.running_var.reshape(shape))
        xhat = centred / (var + self.eps).sqrt()
        return xhat * self.weight.reshape(shape) + self.bias.reshape(shape)


class Dropout(Module):
    def __init__(self, p: float = 0.5, rng=None):
        if not 0 <= p < 1:
            raise UserError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = self.rng.random(x.shape) >= self.p
        return x * (keep / (1 - self.p)).astype(x.dtype)


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.sigmoid()


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class Softmax(Module):
    def __init__(self, dim: int = -1):
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return x.softmax(self.dim)


class Flatten(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class Sequential(Module):
    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
