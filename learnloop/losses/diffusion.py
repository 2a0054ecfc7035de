"""The denoising loss of diffusion models, with optional Min-SNR weighting.

The "simple" objective of Ho, Jain & Abbeel (2020, eq. 14), for the network output f and its target y
(eps, or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 for v-prediction, Salimans & Ho, 2022):

    L = E_{x_0, t, eps} w_t ||f(x_t, t) - y||^2,     w_t = 1 (the default)

as a mean over the batch of per-sample mean squared errors (mean over C, H, W). Min-SNR-gamma weighting
(Hang et al., 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", sec. 3.4) clamps each
timestep's weight on the x_0 error at gamma; expressed on the eps or v error, with SNR_t = abar_t / (1 - abar_t):

    eps-prediction:  w_t = min(SNR_t, gamma) / SNR_t
    v-prediction:    w_t = min(SNR_t, gamma) / (SNR_t + 1)

(gamma = 5 in the paper; gamma = 0 here means no weighting).
"""

from __future__ import annotations

import torch


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction: str = "eps") -> torch.Tensor:
    """Per-sample weights w_t of Min-SNR-gamma for the eps or v error (see the module docstring)."""
    if not gamma > 0:
        raise ValueError(f"Min-SNR gamma must be > 0, got {gamma}")
    if prediction not in ("eps", "v"):
        raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
    clamped = snr.clamp(max=gamma)
    return clamped / snr if prediction == "eps" else clamped / (snr + 1)


def diffusion_loss(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean_b w_b * mean_{c,h,w} (output - target)^2 (w = 1 when `weights` is None)."""
    if output.shape != target.shape:
        raise ValueError(f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape")
    per_sample = (output.float() - target.float()).pow(2).flatten(1).mean(1)
    if weights is None:
        return per_sample.mean()
    if weights.shape != per_sample.shape:
        raise ValueError(f"weights must be one per sample, shape {tuple(per_sample.shape)}, got {tuple(weights.shape)}")
    return (weights.to(per_sample) * per_sample).mean()
