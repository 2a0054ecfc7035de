"""The variational autoencoder's objective (Kingma & Welling, 2014) and the importance-weighted bound (Burda,
Grosse & Salakhutdinov, 2016), per example, in nats.

Encoder q(z|x) = N(mu, diag(exp(logvar))), prior p(z) = N(0, I), decoder p(x|z) = prod_i Bernoulli(x_i;
sigmoid(l_i)) with logits l = decoder(z). Latents may have any shape after the batch dimension (a vector
(N, D) or a spatial latent (N, C, h, w)); every sum runs over all non-batch dimensions.

    z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)          reparameterisation (K&W sec. 2.4)
    recon(x, l) = -log p(x|z) = sum_i softplus(l_i) - x_i l_i
                = sum_i BCE-with-logits(l_i, x_i)                 (pixels x_i in [0, 1])
    KL(q(z|x) || p(z)) = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)      (K&W appendix B)
    ELBO(x) ~ -recon(x, l(z)) - KL,  z ~ q(z|x)              the estimator with the closed-form KL (eq. 10)
    loss = recon + beta * w_t * KL                           beta-VAE weight (Higgins et al., 2017) and a KL
                                                             warm-up w_t = min(1, t / T) (Bowman et al., 2016;
                                                             Sonderby et al., 2016)
    log w_j = log p(x|z_j) + log p(z_j) - log q(z_j|x),  z_j ~ q(z|x), j = 1..k       importance weights
    IWAE_k(x) = log (1/k) sum_j exp(log w_j)                 log-mean-exp, Burda et al. eq. 8

IWAE_1 = log w_1 is the ELBO estimator with a sampled KL (K&W eq. 6), whose expectation is the ELBO; by
Jensen, for the same k samples IWAE_k >= mean_j log w_j, and E IWAE_k <= E IWAE_{k+1} <= log p(x) (Burda et
al., theorem 1), so IWAE_k with large k is the estimate of the test log-likelihood. For grey pixels the
Bernoulli "density" is not normalised over [0, 1] (only over {0, 1}): the nats then compare models on the
same data, they are a log-likelihood only for binarised images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def _per_example(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (drawn with `generator` unless given)."""
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example (N,), in nats, closed form."""
    return 0.5 * _per_example(mu ** 2 + torch.exp(logvar) - 1.0 - logvar)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) = sum_i BCE-with-logits(l_i, x_i) per example (N,), in nats."""
    return _per_example(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) per example (N,)."""
    return -0.5 * _per_example(LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) per example (N,)."""
    return -0.5 * _per_example(LOG_2PI + z ** 2)


def elbo_terms(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(recon, KL) per example, each (N,), in nats: the ELBO estimate is -(recon + KL)."""
    return bernoulli_nll(logits, x), gaussian_kl(mu, logvar)


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             kl_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean of recon + kl_weight * KL, mean recon, mean KL) over the batch; kl_weight = beta * w_t."""
    recon, kl = elbo_terms(logits, x, mu, logvar)
    return (recon + kl_weight * kl).mean(), recon.mean(), kl.mean()


def log_importance_weights(logits: torch.Tensor, x: torch.Tensor, z: torch.Tensor, mu: torch.Tensor,
                           logvar: torch.Tensor) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x) per example (N,), for one sample z per example."""
    return -bernoulli_nll(logits, x) + log_standard_normal(z) - log_normal(z, mu, logvar)


def iwae_bound(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log-mean-exp of the k importance weights along `dim`: IWAE_k = logsumexp(log w) - log k."""
    k = log_w.shape[dim]
    if k < 1:
        raise ValueError("iwae_bound needs at least one sample")
    return torch.logsumexp(log_w, dim=dim) - math.log(k)


def kl_warmup(progress: float, warmup: float) -> float:
    """Linear KL warm-up weight w_t = min(1, progress / warmup) (1 when warmup is 0)."""
    if warmup <= 0:
        return 1.0
    return min(1.0, max(0.0, progress / warmup))
