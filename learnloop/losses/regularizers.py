"""Discriminator regularizers that enforce (or encourage) smoothness: the Lipschitz constraint of WGAN.

- Weight clipping (Arjovsky, Chintala & Bottou, 2017): after every critic update, w <- clamp(w, -c, c)
  for every parameter, which bounds the critic's Lipschitz constant (crudely).
- Gradient penalty (Gulrajani et al., 2017, WGAN-GP), one interpolation coefficient per sample:
      x_hat = eps * x + (1 - eps) * x_fake,   eps ~ U[0, 1] per sample (broadcast over C, H, W)
      GP = E_x_hat (||grad_x_hat D(x_hat)||_2 - 1)^2,  the norm taken over all non-batch dims;
  the loss adds lambda * GP (lambda = 10 in the paper).
- R1 (Mescheder, Geiger & Nowozin, 2018): R1 = E_x ||grad_x D(x)||_2^2 on real data only; the loss adds
  gamma / 2 * R1.
The penalties are built with `create_graph=True`, so back-propagating them trains D (double backprop).
`critic` is any callable x -> scores (for a conditional D pass `lambda x: D(x, y)`).

Lazy regularization (Karras et al., 2020, StyleGAN2, sec. 3.1): a penalty R with weight lambda is computed
only on every k-th update of its player and multiplied by k there,

    L_t = L_main,t + s_t * lambda * R_t,   s_t = k if t mod k == 0 else 0   (t = the player's update index),

so its expected contribution per update is still lambda * R while it costs 1/k as much (`lazy_scale`);
k = 1 is the ordinary, every-step penalty. (StyleGAN2 also scales the optimizer's rate and betas by
k / (k + 1), which we leave to the optimizer settings.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Critic = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def clip_weights(module: torch.nn.Module, c: float) -> None:
    """w <- clamp(w, -c, c) for every parameter of `module` (in place)."""
    if c <= 0:
        raise ValueError(f"clip value must be positive, got {c}")
    for p in module.parameters():
        p.clamp_(-c, c)


def _input_gradient_sq_norms(critic: Critic, x: torch.Tensor) -> torch.Tensor:
    """||grad_x D(x_i)||_2^2 per sample, summed over all non-batch dims (grad of sum_i D(x_i) gives every
    sample's own gradient when D has no cross-sample layers such as BatchNorm)."""
    x = x.detach().requires_grad_(True)
    scores = critic(x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1)


def interpolate(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_hat = eps * real + (1 - eps) * fake with one eps ~ U[0, 1] per sample."""
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} batches differ in shape")
    eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), generator=generator, device=real.device,
                     dtype=real.dtype)
    return eps * real.detach() + (1 - eps) * fake.detach()


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """GP = mean over samples of (||grad D(x_hat)||_2 - 1)^2 (multiply by lambda in the loss)."""
    sq = _input_gradient_sq_norms(critic, interpolate(real, fake, generator))
    return (torch.sqrt(sq + 1e-12) - 1).pow(2).mean()      # 1e-12: finite gradient where grad D = 0


def r1_penalty(critic: Critic, real: torch.Tensor) -> torch.Tensor:
    """R1 = mean over real samples of ||grad D(x)||_2^2 (multiply by gamma / 2 in the loss)."""
    return _input_gradient_sq_norms(critic, real).mean()


def lazy_scale(update: int, every: int) -> int:
    """s_t of lazy regularization: `every` on the updates t (0-based) with t mod every == 0, else 0."""
    if every < 1:
        raise ValueError(f"a regularizer's interval must be >= 1, got {every}")
    return every if update % every == 0 else 0


PENALTIES = ("gp", "r1")                      # input-gradient penalties added to a critic's loss
REGULARIZERS = ("none", "clip", *PENALTIES)   # what a GAN config may choose (clip is a callback)
