"""Adversarial losses as functions of the discriminator's raw outputs (logits / critic scores).

With s_r = D(x) on real data, s_f = D(G(z)) on generated data and sigma the logistic function
(softplus(t) = log(1 + e^t), so -log sigma(t) = softplus(-t) and -log(1 - sigma(t)) = softplus(t)):

- "minimax" (Goodfellow et al., 2014), the original game  min_G max_D E log D(x) + E log(1 - D(G(z))):
      L_D = E softplus(-s_r) + E softplus(s_f)             (binary cross-entropy, real=1, fake=0)
      L_G = E log(1 - sigma(s_f)) = -E softplus(s_f)       (saturates: vanishing gradient when D wins)
- "non-saturating" (Goodfellow et al., 2014, sec. 3; the default): same L_D,
      L_G = E softplus(-s_f) = -E log sigma(s_f)           (BCE of fakes against the label "real")
- "wasserstein" (Arjovsky, Chintala & Bottou, 2017), critic f must be 1-Lipschitz (clip, GP or SN):
      L_D = E s_f - E s_r      (= -W estimate),            L_G = -E s_f
- "hinge" (Lim & Ye, 2017; Miyato et al., 2018):
      L_D = E relu(1 - s_r) + E relu(1 + s_f),             L_G = -E s_f
- "least-squares" (Mao et al., 2017, LSGAN with a=0, b=1, c=1):
      L_D = 1/2 E (s_r - 1)^2 + 1/2 E s_f^2,               L_G = 1/2 E (s_f - 1)^2

`ADVERSARIAL_LOSSES[name]` gives the pair (d_loss(s_r, s_f), g_loss(s_f)); its `threshold` is the score
above which D calls a sample real (used for D's accuracy and the divergence check).

The other terms a generator's loss adds to the adversarial one (weights are the recipe's), with y_hat the
generated tensor and y its reference, means over all elements:

- reconstruction "l1": E |y_hat - y|, Pix2Pix (Isola et al., 2017): L_G = L_cGAN + lambda E||y - G(x)||_1,
  lambda = 100; "l2": E (y_hat - y)^2;
- cycle consistency (Zhu et al., 2017, CycleGAN, eq. 2): E ||F(G(x)) - x||_1 + E ||G(F(y)) - y||_1,
  lambda = 10; and the identity term E ||G(y) - y||_1 (their sec. 5.2, weight lambda / 2): both are L1
  terms between named tensors (`reconstruction_loss("l1", ...)`);
- feature / perceptual (Johnson, Alahi & Fei-Fei, 2016; the VGG content loss of SRGAN, Ledig et al., 2017):
  E (phi(y_hat) - phi(y))^2 for a fixed network phi ("l2"; "l1" gives E |phi(y_hat) - phi(y)|); the target's
  features carry no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def minimax_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def minimax_g(fake: Tensor) -> Tensor:
    return -F.softplus(fake).mean()


def non_saturating_g(fake: Tensor) -> Tensor:
    return F.softplus(-fake).mean()


def wasserstein_d(real: Tensor, fake: Tensor) -> Tensor:
    return fake.mean() - real.mean()


def wasserstein_g(fake: Tensor) -> Tensor:
    return -fake.mean()


def hinge_d(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def least_squares_d(real: Tensor, fake: Tensor) -> Tensor:
    return 0.5 * (real - 1).pow(2).mean() + 0.5 * fake.pow(2).mean()


def least_squares_g(fake: Tensor) -> Tensor:
    return 0.5 * (fake - 1).pow(2).mean()


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    threshold: float          # D says "real" when its score is above this (None-like: 0 for logits)
    bounded: bool             # L_D >= 0 with 0 meaning D separates perfectly (False for Wasserstein)


ADVERSARIAL_LOSSES: dict[str, AdversarialLoss] = {
    "minimax": AdversarialLoss("minimax", minimax_d, minimax_g, 0.0, True),
    "non-saturating": AdversarialLoss("non-saturating", minimax_d, non_saturating_g, 0.0, True),
    "wasserstein": AdversarialLoss("wasserstein", wasserstein_d, wasserstein_g, 0.0, False),
    "hinge": AdversarialLoss("hinge", hinge_d, wasserstein_g, 0.0, True),
    "least-squares": AdversarialLoss("least-squares", least_squares_d, least_squares_g, 0.5, True),
}


def adversarial_loss(name: str) -> AdversarialLoss:
    if name not in ADVERSARIAL_LOSSES:
        raise ValueError(f"unknown adversarial loss '{name}'; choose from {', '.join(ADVERSARIAL_LOSSES)}")
    return ADVERSARIAL_LOSSES[name]


def d_loss(name: str, real: Tensor, fake: Tensor) -> Tensor:
    return adversarial_loss(name).d_loss(real, fake)


def g_loss(name: str, fake: Tensor) -> Tensor:
    return adversarial_loss(name).g_loss(fake)


@torch.no_grad()
def discriminator_accuracy(name: str, real: Tensor, fake: Tensor) -> Tensor:
    """Fraction of real scores above and fake scores below the decision threshold. For Wasserstein
    critics (no fixed threshold) the midpoint of the two batch means is used."""
    t = adversarial_loss(name).threshold
    if name == "wasserstein":
        t = (real.mean() + fake.mean()) / 2
    return ((real > t).float().sum() + (fake <= t).float().sum()) / (real.numel() + fake.numel())


# --- reconstruction, cycle, identity and feature terms -----------------------------------------------------
RECONSTRUCTIONS = ("l1", "l2")


def reconstruction_loss(kind: str, output: Tensor, target: Tensor) -> Tensor:
    """E |output - target| ("l1") or E (output - target)^2 ("l2"), a mean over every element."""
    if output.shape != target.shape:
        raise ValueError(f"{kind} term: output {tuple(output.shape)} and target {tuple(target.shape)} differ in "
                         "shape")
    if kind == "l1":
        return (output - target).abs().mean()
    if kind == "l2":
        return (output - target).pow(2).mean()
    raise ValueError(f"unknown reconstruction distance '{kind}'; choose from {', '.join(RECONSTRUCTIONS)}")


def feature_loss(features: Callable[[Tensor], Tensor], output: Tensor, target: Tensor, distance: str = "l2"
                 ) -> Tensor:
    """Perceptual loss: `reconstruction_loss(distance, phi(output), phi(target))`, phi = `features` (a fixed
    network; gradients reach `output` through it, never `target`)."""
    with torch.no_grad():
        reference = features(target)
    return reconstruction_loss(distance, features(output), reference)
