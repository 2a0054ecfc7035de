"""GAN generators and discriminators for C x H x W images (28x28 grey by default), unconditional or
conditional on one of K classes.

- MLP GAN (Goodfellow et al., 2014): G: z -> 256 -> 512 -> 1024 -> C*H*W, tanh; D: C*H*W -> 512 -> 256 -> 1
  with LeakyReLU(0.2).
- DCGAN (Radford, Metz & Chintala, 2016), H and W divisible by 4 (at 28x28): G: z -> Linear ->
  (H/4)x(W/4)x(2w) 7x7 -> ConvT(4, s2) (H/2)x(W/2)x(w) 14x14 -> ConvT(4, s2) HxWxC 28x28 -> tanh, BatchNorm +
  ReLU inside; D mirrors it: Conv(4, s2) 14x14x(w) -> Conv(4, s2) 7x7x(2w) -> Linear -> 1 score,
  LeakyReLU(0.2), no normalisation on the first layer.
- Conditional GAN (Mirza & Osindero, 2014): the one-hot class vector e_y is concatenated to the noise,
  G([z, e_y]), and to D's input: as a vector after flattening (MLP) or as K constant HxW planes next to
  the image channels (DCGAN), D([x, e_y]).

Options: `d_norm` "batch" | "layer" | "none" for D's hidden layers ("batch" is wrong with a gradient
penalty, which needs per-sample gradients: use "layer" or "none" there); `spectral_norm=True` wraps
every D layer in spectral normalisation (learnloop.nn.spectral_norm); `g_batchnorm` toggles G's BN.
Every discriminator returns raw scores of shape (N,) (logits for the BCE losses, critic values for WGAN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from learnloop.errors import UserError
from learnloop.nn.spectral_norm import spectral_norm as _sn

IMAGE_SHAPE = (1, 28, 28)            # the default: Fashion-MNIST
D_NORMS = ("batch", "layer", "none")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def check_image_shape(shape, arch: str = "mlp") -> tuple[int, int, int]:
    """(C, H, W) as ints; DCGAN halves the side twice, so it needs H and W divisible by 4."""
    try:
        c, h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise UserError(f"image shape must be (C, H, W), got {shape!r}") from None
    if min(c, h, w) < 1:
        raise UserError(f"image shape must be positive, got {(c, h, w)}")
    if arch == "dcgan" and (h % 4 or w % 4):
        raise UserError(f"the dcgan architecture needs image sides divisible by 4, got {h}x{w}")
    return c, h, w


def one_hot(y: torch.Tensor | None, num_classes: int) -> torch.Tensor | None:
    return None if y is None or num_classes == 0 else F.one_hot(y.long(), num_classes).float()


def _cat_condition(h: torch.Tensor, y: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    if num_classes == 0:
        return h
    if y is None:
        raise ValueError("this model is conditional: pass class labels y")
    e = one_hot(y, num_classes)
    if h.ndim == 4:                   # as constant planes next to the image channels
        e = e[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
    return torch.cat([h, e], dim=1)


def _d_norm(kind: str, features: int, spatial: tuple[int, ...] = ()) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(features) if spatial else nn.BatchNorm1d(features)
    if kind == "layer":
        return nn.GroupNorm(1, features) if spatial else nn.LayerNorm(features)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown d_norm '{kind}'; choose from {', '.join(D_NORMS)}")


def _maybe_sn(layer: nn.Module, use: bool) -> nn.Module:
    return _sn(layer) if use else layer


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int = 64, num_classes: int = 0, hidden: tuple[int, ...] = (256, 512, 1024),
                 batchnorm: bool = True, image_shape: tuple[int, int, int] = IMAGE_SHAPE):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.image_shape = check_image_shape(image_shape)
        layers: list[nn.Module] = []
        width = z_dim + num_classes
        for h in hidden:
            layers += [nn.Linear(width, h, bias=not batchnorm)]
            layers += [nn.BatchNorm1d(h)] if batchnorm else []
            layers += [nn.LeakyReLU(0.2) if not batchnorm else nn.ReLU()]
            width = h
        layers += [nn.Linear(width, _numel(self.image_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_cat_condition(z, y, self.num_classes)).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, num_classes: int = 0, hidden: tuple[int, ...] = (512, 256), d_norm: str = "none",
                 spectral_norm: bool = False, dropout: float = 0.0, image_shape: tuple[int, int, int] = IMAGE_SHAPE):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        width = _numel(check_image_shape(image_shape)) + num_classes
        for h in hidden:
            layers += [_maybe_sn(nn.Linear(width, h), spectral_norm), _d_norm(d_norm, h), nn.LeakyReLU(0.2)]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
            width = h
        layers += [_maybe_sn(nn.Linear(width, 1), spectral_norm)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_cat_condition(x.flatten(1), y, self.num_classes)).squeeze(1)


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int = 64, num_classes: int = 0, width: int = 64, batchnorm: bool = True,
                 image_shape: tuple[int, int, int] = IMAGE_SHAPE):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        c, h, w = check_image_shape(image_shape, "dcgan")
        self.start = (h // 4, w // 4)                                  # 7x7 at 28x28
        w2 = 2 * width

        def norm(ch):
            return nn.BatchNorm2d(ch) if batchnorm else nn.Identity()

        cells = w2 * self.start[0] * self.start[1]
        self.project = nn.Linear(z_dim + num_classes, cells, bias=not batchnorm)
        self.project_norm = nn.BatchNorm1d(cells) if batchnorm else nn.Identity()
        self.w2 = w2
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(w2, width, 4, 2, 1, bias=not batchnorm), norm(width), nn.ReLU(),   # 14x14
            nn.ConvTranspose2d(width, c, 4, 2, 1), nn.Tanh())                                     # 28x28

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project_norm(self.project(_cat_condition(z, y, self.num_classes)))
        return self.net(h.view(-1, self.w2, *self.start))


class DCGANDiscriminator(nn.Module):
    def __init__(self, num_classes: int = 0, width: int = 64, d_norm: str = "batch", spectral_norm: bool = False,
                 image_shape: tuple[int, int, int] = IMAGE_SHAPE):
        super().__init__()
        self.num_classes = num_classes
        c, h, w = check_image_shape(image_shape, "dcgan")
        end = (h // 4, w // 4)
        w2 = 2 * width
        self.net = nn.Sequential(
            _maybe_sn(nn.Conv2d(c + num_classes, width, 4, 2, 1), spectral_norm), nn.LeakyReLU(0.2),     # 14x14
            _maybe_sn(nn.Conv2d(width, w2, 4, 2, 1), spectral_norm), _d_norm(d_norm, w2, end),
            nn.LeakyReLU(0.2),                                                                            # 7x7
            nn.Flatten(),
            _maybe_sn(nn.Linear(w2 * end[0] * end[1], 1), spectral_norm))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_cat_condition(x, y, self.num_classes)).squeeze(1)


ARCHITECTURES = ("mlp", "dcgan")


def init_dcgan(module: nn.Module) -> nn.Module:
    """DCGAN's initialisation: conv weights ~ N(0, 0.02), BN scale ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(w, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def build_gan(arch: str, z_dim: int = 64, num_classes: int = 0, width: int = 64, g_batchnorm: bool = True,
              d_norm: str = "batch", spectral_norm: bool = False, dcgan_init: bool = True,
              image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for `arch` in ARCHITECTURES, for images of `image_shape` (C, H, W)."""
    if d_norm not in D_NORMS:
        raise ValueError(f"unknown d_norm '{d_norm}'; choose from {', '.join(D_NORMS)}")
    if arch == "mlp":
        g = MLPGenerator(z_dim, num_classes, batchnorm=g_batchnorm, image_shape=image_shape)
        d = MLPDiscriminator(num_classes, d_norm=d_norm, spectral_norm=spectral_norm, image_shape=image_shape)
        return g, d
    if arch == "dcgan":
        g = DCGANGenerator(z_dim, num_classes, width, g_batchnorm, image_shape)
        d = DCGANDiscriminator(num_classes, width, d_norm, spectral_norm, image_shape)
        if dcgan_init:
            init_dcgan(g)
            if not spectral_norm:      # SN rescales W anyway; keep torch's default init under SN
                init_dcgan(d)
        return g, d
    raise ValueError(f"unknown GAN architecture '{arch}'; choose from {', '.join(ARCHITECTURES)}")
