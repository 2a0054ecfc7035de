"""Spectral normalisation (Miyato, Kataoka, Koyama & Yoshida, 2018), written from scratch with power iteration.

A layer's weight W (out x in..., reshaped to a matrix W_mat of shape h x w with `dim` first) is replaced
by W / sigma(W), where sigma is W_mat's largest singular value, so the layer is 1-Lipschitz (the
discriminator constraint of SNGAN). sigma is estimated by power iteration on persistent vectors u, v:

    u <- normalize(W_mat v),   v <- normalize(W_mat^T u)      (`n_power_iterations` times per training forward)
    sigma = u^T W_mat v                                       (u, v treated as constants for the gradient)
    W_SN = W / sigma

u ~ N(0, I_h) and v ~ N(0, I_w) are drawn (in that order, from torch's global generator) and refined
with 15 iterations at construction; in eval mode u and v are frozen. A 1-D weight is simply divided by
its norm. This is exactly what `torch.nn.utils.parametrizations.spectral_norm` computes, with the same
state-dict keys (`parametrizations.weight.original`, `parametrizations.weight.0._u` / `._v`), so either
implementation loads the other's weights; `spectral_norm(module, name, n_power_iterations, eps, dim)`
takes the same arguments as its torch twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class SpectralNorm(nn.Module):
    """The parametrization W -> W / sigma(W) (registered on a module by `spectral_norm`)."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12):
        super().__init__()
        ndim = weight.ndim
        if not -ndim <= dim < max(ndim, 1):
            raise IndexError(f"dim {dim} is out of range for a weight with {ndim} dimensions")
        if n_power_iterations <= 0:
            raise ValueError(f"n_power_iterations must be positive, got {n_power_iterations}")
        self.dim = dim % max(ndim, 1)
        self.eps = eps
        self.n_power_iterations = n_power_iterations
        if ndim > 1:
            w_mat = self._matrix(weight)
            h, w = w_mat.shape
            u = w_mat.new_empty(h).normal_(0, 1)
            v = w_mat.new_empty(w).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=eps))
            self._power_iteration(w_mat, 15)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """W with `dim` moved first, flattened to (h, w)."""
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.ndim) if d != self.dim))
        return weight.flatten(1)

    @torch.no_grad()
    def _power_iteration(self, w_mat: torch.Tensor, steps: int) -> None:
        # in-place updates keep u, v the same buffers (they are module state, checkpointed)
        for _ in range(steps):
            self._u.copy_(F.normalize(w_mat @ self._v, dim=0, eps=self.eps))
            self._v.copy_(F.normalize(w_mat.mH @ self._u, dim=0, eps=self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        w_mat = self._matrix(weight)
        if self.training:
            self._power_iteration(w_mat, self.n_power_iterations)
        # clones: a later forward (D(real) then D(fake)) updates the buffers in place, which must not
        # invalidate the graph of an earlier one
        u, v = self._u.clone(), self._v.clone()
        sigma = torch.vdot(u, w_mat @ v)
        return weight / sigma

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None) -> nn.Module:
    """Register W -> W / sigma(W) on `module.<name>`; `dim` defaults to 1 for transposed convolutions
    (their output channels are dim 1), else 0. Returns the module."""
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"module {type(module).__name__} has no parameter or buffer named '{name}'")
    if dim is None:
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(module, name, SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


def largest_singular_value(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Exact sigma(W) of the weight reshaped as above (for tests and diagnostics)."""
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
    return torch.linalg.matrix_norm(weight.flatten(1), ord=2)
