"""Latent diffusion in miniature (Rombach et al., 2022) with classifier-free guidance (Ho & Salimans, 2022).

Three trained parts work together; this module holds the glue that is neither of them:

    z_0 = s * E(x)                    an autoencoder's encoder E (the VAE's posterior mean) maps an image to a
                                      small spatial latent; s = 1 / std(z) over training latents (Rombach et
                                      al., sec. 4.3.2: "rescale the latent ... to unit standard deviation")
    eps_theta(z_t, t, c)              a U-Net (learnloop.models.unet) with cross-attention to the token states
                                      c = tau(y) of a text encoder tau (the CLIP text encoder), frozen
    x = D(z_0 / s)                    the decoder turns a denoised latent back into an image

Classifier-free guidance trains ONE network for both the conditional and the unconditional model by
replacing the caption with the null caption (here the empty text [BOS] [EOS]) with probability p_uncond, and
samples with the guided prediction

    eps~(z_t, c) = eps(z_t, null) + w * (eps(z_t, c) - eps(z_t, null))        (Ho & Salimans, eq. 6 with w = 1 + w')

so w = 1 is the conditional model, w = 0 the unconditional one and w > 1 trades diversity for agreement
with the prompt. `GuidedDenoiser` evaluates both predictions in one batch of 2B.
"""

from __future__ import annotations

import torch
from torch import nn


class LatentDenoiser(nn.Module):
    """The U-Net of latent diffusion plus the latent scale s as a buffer, so a checkpoint carries it."""

    def __init__(self, unet: nn.Module, latent_shape: tuple[int, ...]):
        super().__init__()
        self.unet, self.latent_shape = unet, tuple(latent_shape)
        self.register_buffer("latent_scale", torch.ones(()))

    @property
    def in_channels(self) -> int:
        return self.unet.in_channels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.unet.image_size

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(z_t, t, context=context, context_mask=context_mask)

    @torch.no_grad()
    def fit_scale(self, latents: torch.Tensor) -> float:
        """s = 1 / std of `latents` (unscaled encoder outputs); stored in the buffer and returned."""
        std = float(latents.float().std())
        if not std > 0:
            raise ValueError("the latents have zero spread: the autoencoder encodes every image alike")
        self.latent_scale.fill_(1.0 / std)
        return 1.0 / std


def drop_captions(context: torch.Tensor, mask: torch.Tensor, null_context: torch.Tensor, null_mask: torch.Tensor,
                  p_uncond: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training side of classifier-free guidance: each row of the (B, L, W) `context` (with its (B, L)
    padding `mask`) is replaced by the null caption's (1, L0, W) states with probability `p_uncond`. The
    null caption is padded (mask True) to the batch's length L >= L0."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
    B, L, _ = context.shape
    if null_context.shape[1] > L:
        raise ValueError(f"the null caption has {null_context.shape[1]} tokens, the batch only {L}")
    drop = torch.rand(B, generator=generator) < p_uncond
    if not bool(drop.any()):
        return context, mask
    null_c, null_m = pad_context(null_context, null_mask, L)
    drop = drop.to(context.device)
    context = torch.where(drop[:, None, None], null_c.expand(B, -1, -1), context)
    mask = torch.where(drop[:, None], null_m.expand(B, -1), mask)
    return context, mask


def pad_context(context: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L0, W) states and (B, L0) mask padded to `length` positions (zeros, mask True)."""
    B, L0, W = context.shape
    if length == L0:
        return context, mask
    context = torch.cat([context, context.new_zeros(B, length - L0, W)], dim=1)
    mask = torch.cat([mask, mask.new_ones(B, length - L0)], dim=1)
    return context, mask


class GuidedDenoiser:
    """`model(z_t, t)` for a sampler: eps~ of the module docstring for the (B, L, W) prompt states `context`
    and the null caption's (1, L0, W) states, at guidance scale `scale` (1: just the conditional model)."""

    def __init__(self, model: nn.Module, context: torch.Tensor, mask: torch.Tensor, null_context: torch.Tensor,
                 null_mask: torch.Tensor, scale: float):
        if not scale >= 0 or scale != scale or scale == float("inf"):
            raise ValueError(f"the guidance scale must be a finite number >= 0, got {scale}")
        self.model, self.scale = model, float(scale)
        L = max(context.shape[1], null_context.shape[1])
        self.context, self.mask = pad_context(context, mask, L)
        self.null_context, self.null_mask = pad_context(null_context, null_mask, L)

    def __call__(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B = len(z_t)
        if len(self.context) != B:
            raise ValueError(f"{len(self.context)} prompts for a batch of {B} latents")
        if self.scale == 1.0:
            return self.model(z_t, t, self.context, self.mask)
        null_c = self.null_context.expand(B, -1, -1)
        null_m = self.null_mask.expand(B, -1)
        if self.scale == 0.0:
            return self.model(z_t, t, null_c, null_m)
        both = self.model(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([self.context, null_c]),
                          torch.cat([self.mask, null_m]))
        cond, uncond = both[:B], both[B:]
        return uncond + self.scale * (cond - uncond)
