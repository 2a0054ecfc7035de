"""First-order optimisers that update scratch Tensors in place, given their gradients.

    SGD with momentum (Polyak, 1964; in torch.optim.SGD's form):
        v <- mu v + (g + lambda theta);   theta <- theta - eta v
    Adam (Kingma & Ba, 2015, Algorithm 1):
        m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2
        theta <- theta - eta (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
"""

from __future__ import annotations

import numpy as np

from learnloop.errors import UserError
from learnloop.scratch.autodiff import Tensor


class _Optimizer:
    def __init__(self, params: list[Tensor], lr: float):
        self.params, self.lr = list(params), lr
        if not self.params:
            raise UserError("optimizer got an empty parameter list")

    def step(self, grads: list[np.ndarray]) -> None:
        if len(grads) != len(self.params):
            raise UserError(f"optimizer has {len(self.params)} parameters but got {len(grads)} gradients")
        for k, (p, g) in enumerate(zip(self.params, grads)):
            if g is not None:
                p.value = p.value - self._update(k, p.value, g).astype(p.dtype)


class SGD(_Optimizer):
    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.velocity = [np.zeros_like(p.value) for p in self.params]

    def _update(self, k: int, theta: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.velocity[k] = self.momentum * self.velocity[k] + g + self.weight_decay * theta
        return self.lr * self.velocity[k]


class Adam(_Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.m = [np.zeros_like(p.value) for p in self.params]
        self.v = [np.zeros_like(p.value) for p in self.params]
        self.t = [0] * len(self.params)

    def _update(self, k: int, theta: np.ndarray, g: np.ndarray) -> np.ndarray:
        self.t[k] += 1
        self.m[k] = self.beta1 * self.m[k] + (1 - self.beta1) * g
        self.v[k] = self.beta2 * self.v[k] + (1 - self.beta2) * g * g
        m_hat = self.m[k] / (1 - self.beta1 ** self.t[k])
        v_hat = self.v[k] / (1 - self.beta2 ** self.t[k])
        return self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
