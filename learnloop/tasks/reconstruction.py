"""Learning to reconstruct images as Tasks: plain, denoising and inpainting autoencoders (`Reconstruction`) and
the variational autoencoder (`VariationalAutoencoding`), with the corruptions and the baselines they are
measured against.

Batches are (inputs, targets, masks), float (N, C, H, W) in [0, 1] with masks (N, 1, H, W), made by a loader
that applies a corruption with its own seeded generator (learnloop.recipes.autoencoder.common):

- none:        inputs = targets = x, mask = 1 everywhere (a plain autoencoder, Hinton & Salakhutdinov, 2006)
- noise:       inputs = clip(x + std * eps, 0, 1), eps ~ N(0, I); mask = 1 (denoising autoencoder,
               Vincent et al., 2008, with the additive Gaussian noise Vincent et al., 2010 compare with
               masking and salt-and-pepper noise)
- rectangles:  `count` axis-aligned rectangles per image, each side uniform in [min, max] pixels, at a
               uniform position inside the image; mask = 1 on them; inputs = x (1 - m) (holes filled with
               0) and, for the model, the mask as an extra channel (inpainting as in Pathak et al., 2016,
               without the adversarial term)
- binarize:    targets = inputs = Bernoulli(x) draws (stochastic binarisation, Salakhutdinov & Murray,
               2008), the data on which a Bernoulli VAE's nats are a log-likelihood

`Reconstruction` minimises the mean per-pixel loss "mse" (E (sigmoid(l) - x)^2) or "bce" (E BCE(l, x)) of
the whole image. An inpainting output is composited, restored = x_in (1 - m) + x_hat m: visible pixels are
kept, the model fills the holes. `VariationalAutoencoding` minimises recon + beta * w_t * KL per image
(learnloop.losses.vae) with the linear warm-up w_t = min(1, epochs done / warmup_epochs), counted in
optimizer steps (t = step / steps per epoch); its validation reports the terms at w_t = 1.

Baselines: `blur` (Gaussian blur of the noisy input); `mean_fill` (holes take the training set's mean
image); `blur_fill` (holes take the normalised convolution of the visible pixels, G * (x (1 - m)) /
G * (1 - m), Knutsson & Westin, 1993, falling back to the mean image where G * (1 - m) < 1e-3).
`pca_basis` / `pca_reconstruct` are the best linear autoencoder of k units (the latent-size baseline).
`importance_weighted` computes the k-sample bounds of Burda et al. (2016) for a batch of images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dataclasses import dataclass

from learnloop.engine.optim import OptimConfig, build_optimizer
from learnloop.engine.task import Task
from learnloop.errors import UserError
from learnloop.losses.vae import (
    iwae_bound, kl_warmup, log_importance_weights, reparameterize, vae_loss,
)
from learnloop.metrics.image import gaussian_blur

CORRUPTIONS = ("none", "noise", "rectangles", "binarize")
LOSSES = ("mse", "bce")
FILL_WEIGHT_MIN = 1e-3


# --- corruptions -----------------------------------------------------------------------------------------
def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """clip(x + std * eps, 0, 1), eps ~ N(0, I)."""
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + std * eps.to(x.device)).clamp_(0.0, 1.0)


def rectangle_masks(n: int, height: int, width: int, min_size: int, max_size: int, count: int = 1,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 1, height, width) float masks, 1 on `count` random rectangles per image (module docstring)."""
    if not 1 <= min_size <= max_size or max_size > min(height, width):
        raise UserError(f"mask sizes must satisfy 1 <= min <= max <= {min(height, width)} (the image side), "
                        f"got {min_size}..{max_size}")
    rows, cols = torch.arange(height).view(1, height, 1), torch.arange(width).view(1, 1, width)
    mask = torch.zeros(n, height, width, dtype=torch.bool)
    for _ in range(count):
        h = torch.randint(min_size, max_size + 1, (n,), generator=generator)
        w = torch.randint(min_size, max_size + 1, (n,), generator=generator)
        top = (torch.rand(n, generator=generator) * (height - h + 1)).long()
        left = (torch.rand(n, generator=generator) * (width - w + 1)).long()
        inside = (rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1)) \
            & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1))
        mask |= inside
    return mask.unsqueeze(1).float()


def apply_mask(x: torch.Tensor, mask: torch.Tensor, fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """x with the masked pixels (mask = 1) replaced by `fill` (a number or an image broadcast to x)."""
    return x * (1 - mask) + fill * mask


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli(x) draws: each pixel 1 with probability x."""
    return (torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) < x).to(x.dtype)


@dataclass(frozen=True)
class Corruption:
    """One of CORRUPTIONS with its settings: (x, generator) -> (inputs, targets, masks) (module docstring)."""

    kind: str = "none"
    noise_std: float = 0.3
    mask_size: tuple[int, int] = (6, 14)
    mask_count: int = 1

    def __post_init__(self):
        if self.kind not in CORRUPTIONS:
            raise UserError(f"corruption must be one of {', '.join(CORRUPTIONS)}, got {self.kind!r}")

    def masks(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.kind != "rectangles":
            return torch.ones(n, 1, h, w, dtype=x.dtype)
        lo, hi = self.mask_size
        return rectangle_masks(n, h, w, lo, hi, self.mask_count, generator).to(x.dtype)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None):
        if self.kind == "binarize":
            x = binarize(x, generator)
        masks = self.masks(x, generator)
        if self.kind == "noise":
            return gaussian_noise(x, self.noise_std, generator), x, masks
        if self.kind == "rectangles":
            return apply_mask(x, masks), x, masks
        return x, x, masks


# --- baselines ---------------------------------------------------------------------------------------------
def mean_fill(x: torch.Tensor, mask: torch.Tensor, mean_image: torch.Tensor) -> torch.Tensor:
    """Holes filled with the mean image (C, H, W)."""
    return apply_mask(x, mask, mean_image.to(x).unsqueeze(0))


def blur_fill(x: torch.Tensor, mask: torch.Tensor, sigma: float, mean_image: torch.Tensor) -> torch.Tensor:
    """Holes filled by normalised convolution of the visible pixels (module docstring)."""
    visible = 1 - mask
    num = gaussian_blur(x * visible, sigma, padding="zeros")
    den = gaussian_blur(visible.expand_as(x), sigma, padding="zeros")
    mean = mean_image.to(x).unsqueeze(0).expand_as(x)
    filled = torch.where(den >= FILL_WEIGHT_MIN, num / den.clamp_min(FILL_WEIGHT_MIN), mean)
    return apply_mask(x, mask, filled)


def composite(inputs: torch.Tensor, outputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Visible pixels from the input, holes from the model: x_in (1 - m) + x_hat m."""
    return apply_mask(inputs, mask, outputs)


def pca_basis(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), top-k principal directions (D, k)) of images x (N, ...) flattened, float64: the subspace
    a linear autoencoder trained with MSE converges to (Baldi & Hornik, 1989), the linear baseline."""
    flat = x.flatten(1).to(torch.float64)
    mean = flat.mean(0)
    centred = flat - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)        # ascending eigenvalues
    return mean, vectors[:, -k:].flip(1) if k > 0 else vectors[:, :0]


def pca_reconstruct(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """x projected onto mean + span(basis), clipped to [0, 1], in x's shape and dtype."""
    flat = x.flatten(1).to(torch.float64) - mean
    return (mean + flat @ basis @ basis.T).clamp(0, 1).reshape(x.shape).to(x.dtype)


# --- tasks ---------------------------------------------------------------------------------------------------
class Reconstruction(Task):
    """An autoencoder trained to map inputs to targets with the mean per-pixel `loss` ("mse" or "bce");
    `mask_channel` feeds the mask to the model as an extra input channel, `keep_visible` keeps the visible
    input pixels in the output (inpainting)."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig | None = None, loss: str = "bce",
                 mask_channel: bool = False, keep_visible: bool = False):
        if loss not in LOSSES:
            raise UserError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.model, self.optim, self.loss, self.mask_channel = model, optim or OptimConfig(), loss, mask_channel
        self.keep_visible = keep_visible

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return build_optimizer(self.optim, self.model.parameters())

    def logits(self, inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([inputs, masks], dim=1) if self.mask_channel else inputs)

    @torch.no_grad()
    def reconstruct(self, inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The model's output image in [0, 1] (composited with the visible input with `keep_visible`)."""
        out = torch.sigmoid(self.logits(inputs, masks))
        return composite(inputs, out, masks) if self.keep_visible else out

    def _step(self, batch):
        inputs, targets, masks = batch
        logits = self.logits(inputs, masks)
        out = torch.sigmoid(logits)
        loss = F.mse_loss(out, targets) if self.loss == "mse" else F.binary_cross_entropy_with_logits(logits, targets)
        return loss, out.detach(), targets

    def training_step(self, batch, learner):
        loss, out, targets = self._step(batch)
        return {"loss": loss, "mse": F.mse_loss(out, targets)}

    def validation_step(self, batch, learner):
        loss, out, targets = self._step(batch)
        if self.keep_visible:
            out = composite(batch[0], out, batch[2])
        return {"loss": loss.detach(), "mse": F.mse_loss(out, targets)}

    def predict_step(self, batch, learner):
        return self.reconstruct(batch[0], batch[2])


class VariationalAutoencoding(Task):
    """A VAE trained on recon + beta * w_t * KL (module docstring); batches as `Reconstruction`'s, the masks
    unused. Logs recon, kl, elbo (= -(recon + kl), nats per image) and the KL weight beta * w_t."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig | None = None, beta: float = 1.0,
                 warmup_epochs: float = 0.0):
        self.model, self.optim = model, optim or OptimConfig()
        self.beta, self.warmup_epochs = float(beta), float(warmup_epochs)

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return build_optimizer(self.optim, self.model.parameters())

    def kl_weight(self, learner) -> float:
        """beta * w_t, t in epochs: optimizer steps done / steps per epoch."""
        loader = getattr(learner, "train_loader", None)
        per_epoch = max(1, -(-len(loader) // learner.accumulate)) if loader is not None else 1
        return self.beta * kl_warmup(learner.step / per_epoch, self.warmup_epochs)

    def _terms(self, batch, weight: float):
        _, targets, _ = batch
        logits, mu, logvar, _ = self.model(batch[0])
        loss, recon, kl = vae_loss(logits, targets, mu, logvar, weight)
        return {"loss": loss, "recon": recon.detach(), "kl": kl.detach(), "elbo": -(recon + kl).detach()}

    def training_step(self, batch, learner):
        weight = self.kl_weight(learner)
        return {**self._terms(batch, weight), "kl_weight": weight}

    def validation_step(self, batch, learner):
        out = self._terms(batch, self.beta)
        return {**out, "loss": out["loss"].detach()}

    def predict_step(self, batch, learner):
        mu, _ = self.model.encode(batch[0])
        return torch.sigmoid(self.model.decode_logits(mu))


@torch.no_grad()
def importance_weighted(model, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                        chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO_k, IWAE_k) per image (N,) of a VAE on targets x: the mean and the log-mean-exp of k importance
    weights log w_j (learnloop.losses.vae); decodes at most `chunk` latents at a time."""
    if k < 1:
        raise UserError(f"importance sampling needs k >= 1 samples, got {k}")
    mu, logvar = model.encode(x)
    per = max(1, chunk // k)
    elbo, iwae = [], []
    for lo in range(0, len(x), per):
        m, lv, xs = mu[lo:lo + per], logvar[lo:lo + per], x[lo:lo + per]
        n = len(m)
        m_k, lv_k = m.repeat(k, *([1] * (m.ndim - 1))), lv.repeat(k, *([1] * (lv.ndim - 1)))
        x_k = xs.repeat(k, *([1] * (xs.ndim - 1)))
        z = reparameterize(m_k, lv_k, generator=generator)
        log_w = log_importance_weights(model.decode_logits(z), x_k, z, m_k, lv_k).view(k, n)
        elbo.append(log_w.mean(0))
        iwae.append(iwae_bound(log_w, dim=0))
    return torch.cat(elbo), torch.cat(iwae)
