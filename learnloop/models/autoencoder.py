"""Convolutional autoencoders for C x H x W images (28 x 28 grey by default, H and W divisible by 4): the
deterministic autoencoder (compression to a latent code; Hinton & Salakhutdinov, 2006) and the variational
autoencoder's Gaussian encoder and decoder (Kingma & Welling, 2014; its objective: learnloop.losses.vae).

With width w, images in [0, 1]:

    encoder  x (C_in, H, W) -> Conv(4, s2, p1) -> ReLU   (w, H/2, W/2)       14 x 14 at 28 x 28
                            -> Conv(4, s2, p1) -> ReLU   (2w, H/4, W/4)      7 x 7
                            -> head                      the code (or 2 codes: mu and logvar)
    decoder  z -> head^-1 -> ReLU                        (2w, H/4, W/4)
               -> ConvT(4, s2, p1) -> ReLU               (w, H/2, W/2)
               -> ConvT(4, s2, p1)                       (C, H, W) logits; decode() applies the sigmoid

Latent shapes (`latent_shape`, what `encode` returns per image):
    latent="vector":   (latent_dim,)                        head: Flatten -> Linear;  head^-1: Linear
    latent="spatial":  (latent_channels, H/4, W/4), e.g.    head: Conv(3, p1) to latent_channels;
                       4 x 7 x 7 at 28 x 28                 head^-1: Conv(3, p1) back to 2w
The spatial latent keeps the image layout, as a latent-diffusion model (Rombach et al., 2022) wants its
latents: a U-Net can denoise (4, 7, 7) tensors directly.

Methods (both classes take images in [0, 1] and return images in [0, 1] from `decode`):
    Autoencoder:  encode(x) -> z;  decode(z) -> x_hat;  decode_logits(z);  forward(x) -> logits
    VAE:          encode(x) -> (mu, logvar);  decode(z) -> x_hat (the Bernoulli means);  decode_logits(z);
                  forward(x) -> (logits, mu, logvar, z) with z = mu + exp(logvar / 2) eps;  sample(n)
`in_channels` may exceed the image channels (an inpainting model also sees the mask as a channel); the
decoder always outputs the image's C channels.
"""

from __future__ import annotations

import torch
from torch import nn

from learnloop.errors import UserError
from learnloop.losses.vae import reparameterize

LATENTS = ("vector", "spatial")


def check_shape(image_shape) -> tuple[int, int, int]:
    """(C, H, W) as ints, with H and W divisible by 4 (the encoder halves each side twice)."""
    try:
        c, h, w = (int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise UserError(f"image shape must be (C, H, W), got {image_shape!r}") from None
    if min(c, h, w) < 1 or h % 4 or w % 4:
        raise UserError(f"the convolutional autoencoder needs positive image sides divisible by 4, got {h}x{w}")
    return c, h, w


class ConvAutoencoder(nn.Module):
    """Encoder and decoder of the module docstring; `codes` = 1 (a code) or 2 (mu and logvar) per latent."""

    codes = 1

    def __init__(self, image_shape=(1, 28, 28), width: int = 32, latent: str = "vector", latent_dim: int = 16,
                 latent_channels: int = 4, in_channels: int | None = None):
        super().__init__()
        if latent not in LATENTS:
            raise UserError(f"latent must be one of {', '.join(LATENTS)}, got {latent!r}")
        if width < 1 or latent_dim < 1 or latent_channels < 1:
            raise UserError("width, latent_dim and latent_channels must be >= 1")
        c, h, w = check_shape(image_shape)
        self.image_shape, self.latent, self.width = (c, h, w), latent, width
        self.in_channels = c if in_channels is None else int(in_channels)
        hidden = (2 * width, h // 4, w // 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(self.in_channels, width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU())
        if latent == "vector":
            self.latent_shape = (latent_dim,)
            n = hidden[0] * hidden[1] * hidden[2]
            self.to_code = nn.Sequential(nn.Flatten(), nn.Linear(n, self.codes * latent_dim))
            self.from_code = nn.Sequential(nn.Linear(latent_dim, n), nn.Unflatten(1, hidden), nn.ReLU())
        else:
            self.latent_shape = (latent_channels, h // 4, w // 4)
            self.to_code = nn.Conv2d(hidden[0], self.codes * latent_channels, 3, 1, 1)
            self.from_code = nn.Sequential(nn.Conv2d(latent_channels, hidden[0], 3, 1, 1), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, 2, 1))

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_code(self.encoder(x))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) of the image decoded from latents z (N, *latent_shape)."""
        return self.decoder(self.from_code(z))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The image (N, C, H, W) in [0, 1] decoded from latents z (N, *latent_shape)."""
        return torch.sigmoid(self.decode_logits(z))


class Autoencoder(ConvAutoencoder):
    """Deterministic autoencoder: encode(x) -> z (N, *latent_shape), forward(x) -> reconstruction logits."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._codes(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_logits(self.encode(x))


class VAE(ConvAutoencoder):
    """Gaussian encoder q(z|x) = N(mu, diag(exp(logvar))) and Bernoulli decoder p(x|z) (module docstring)."""

    codes = 2

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (N, *latent_shape), of images x in [0, 1]."""
        mu, logvar = self._codes(x).chunk(2, dim=1)
        return mu, logvar

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator=generator)
        return self.decode_logits(z), mu, logvar, z

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images in [0, 1] decoded from z ~ N(0, I) (the Bernoulli means)."""
        p = next(self.parameters())
        z = torch.randn((n, *self.latent_shape), generator=generator, dtype=p.dtype).to(p.device)
        return self.decode(z)
