"""Noise-driven generators G(z, y): sampling z, generating images, and the noise-driven GAN (Goodfellow et
al., 2014) as an adversarial task.

`sample_noise` draws z ~ N(0, I), optionally with the truncation trick (Brock, Donahue & Simonyan, 2019);
`generate` runs a generator on seeded noise in eval mode; `noise_gan` declares the two-player game of
"generator" and "discriminator" with one adversarial term and D's optional gradient penalty or R1.
"""

from __future__ import annotations

import torch
from torch import nn

from learnloop.engine.optim import OptimConfig
from learnloop.errors import UserError
from learnloop.tasks.adversarial.game import Pass, Player, Regularizer, adversarial
from learnloop.tasks.adversarial.task import AdversarialTask


def sample_noise(n: int, z_dim: int, truncation: float | None = None, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """z ~ N(0, I); with `truncation` t > 0 the truncation trick (Brock, Donahue & Simonyan, 2019): every
    coordinate with |z_i| > t is redrawn until it falls inside [-t, t] (a truncated normal)."""
    z = torch.randn(n, z_dim, generator=generator)
    if truncation is None or truncation <= 0:
        return z
    out = z.abs() > truncation
    while out.any():
        z[out] = torch.randn(int(out.sum()), generator=generator)
        out = z.abs() > truncation
    return z


@torch.no_grad()
def generate(generator: nn.Module, n: int, z_dim: int, num_classes: int = 0, *, labels: torch.Tensor | None = None,
             truncation: float | None = None, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """n images from a noise-driven `generator(z, y)` in eval mode (z from its own generator seeded with
    `seed`); class labels cycle 0..K-1 unless given."""
    g = torch.Generator().manual_seed(seed)
    z = sample_noise(n, z_dim, truncation, g)
    if num_classes and labels is None:
        labels = torch.arange(n) % num_classes
    was = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    try:
        outs = []
        for i in range(0, n, batch_size):
            y = labels[i:i + batch_size].to(device) if num_classes else None
            outs.append(generator(z[i:i + batch_size].to(device), y).float().cpu())
    finally:
        generator.train(was)
    if not outs:
        raise UserError("generate needs n >= 1 samples")
    return torch.cat(outs)


def noise_gan(generator: nn.Module, discriminator: nn.Module, *, z_dim: int, num_classes: int = 0,
              loss: str = "non-saturating", penalty: str = "none", penalty_weight: float = 10.0,
              penalty_every: int = 1, n_critic: int = 1, g_optim: OptimConfig | None = None,
              d_optim: OptimConfig | None = None, **options) -> AdversarialTask:
    """The noise-driven GAN (Goodfellow et al., 2014) and its variants as an AdversarialTask: modules and
    players "generator" (x_f = G(z[, y]), z ~ N(0, I) of `z_dim`, updating every `n_critic` batches, metric
    tag "g") and "discriminator" (D(x[, y]), tag "d"), one adversarial term of `loss`, and D's penalty
    ("gp": lambda * GP, "r1": gamma / 2 * R1, lambda or gamma = `penalty_weight`, every `penalty_every` D
    updates) unless `penalty` is "none". Batches are (images, labels); y = labels when `num_classes` > 0.
    Optimizers default to Adam(2e-4, betas (0.5, 0.999)) (Radford et al., 2016); `options` go to the task
    (callbacks, monitor, collapse_patience, time_budget_s, ...)."""
    default = OptimConfig(name="adam", lr=2e-4, betas=(0.5, 0.999))
    term = adversarial("discriminator", loss)
    regularizers = () if penalty == "none" else (Regularizer(penalty, "discriminator", penalty_weight, penalty_every),)
    players = [Player("generator", ("generator",), g_optim or default, (term,), every=n_critic, tag="g"),
               Player("discriminator", ("discriminator",), d_optim or default, (term,), regularizers, tag="d")]
    g_inputs = (lambda v: (v["z"], v["label"])) if num_classes else (lambda v: (v["z"],))
    d_inputs = {"discriminator": lambda v, x: (x, v["label"])} if num_classes else {}
    return AdversarialTask({"generator": generator, "discriminator": discriminator}, players,
                           [Pass("fake", "generator", g_inputs)], noise={"z": z_dim}, critic_inputs=d_inputs,
                           **options)
