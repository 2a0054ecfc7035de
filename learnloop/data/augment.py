"""Batched image augmentation on float tensors (N, C, H, W) in [0, 1]: every op draws its random
parameters for the whole batch at once and applies them with tensor ops, never looping over samples.

- `random_flip`: horizontal mirror with probability p.
- `random_crop`: zero-pad by `padding` pixels, then crop back at a random offset per sample.
- `random_affine`: rotation, translation, scale and shear per sample through one `affine_grid` /
  `grid_sample` call; the 2x3 matrix is  A = T(t) R(theta) Sh(s) S(k).
- `RandAugment` (Cubuk et al., 2020): each sample gets `n` ops drawn uniformly from a fixed list,
  all at one global magnitude `m` in [0, 30] (the paper's scale is 0..10 of a max; we keep 0..30 here
  as a fraction `m/30` of each op's maximum strength).

All randomness comes from `torch`'s global generator (or the `generator` passed), which the engine
checkpoints, so augmented runs stay reproducible and resumable.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def _rand(n, generator=None, device=None):
    return torch.rand(n, generator=generator, device=device)


def random_flip(x: torch.Tensor, p: float = 0.5, generator=None) -> torch.Tensor:
    flip = _rand(len(x), generator, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_crop(x: torch.Tensor, padding: int = 4, generator=None) -> torch.Tensor:
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])            # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])            # (n, w)
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def affine_matrices(n: int, degrees: float = 0.0, translate: float = 0.0, scale: tuple[float, float] = (1, 1),
                    shear: float = 0.0, generator=None, device=None) -> torch.Tensor:
    """(n, 2, 3) matrices in normalised coordinates, parameters uniform in the given ranges."""

    def uniform(lo, hi):
        return lo + (hi - lo) * _rand(n, generator, device)

    theta = uniform(-degrees, degrees) * math.pi / 180
    sh = uniform(-shear, shear) * math.pi / 180
    k = uniform(*scale)
    tx, ty = uniform(-translate, translate) * 2, uniform(-translate, translate) * 2
    cos, sin = torch.cos(theta), torch.sin(theta)
    # R @ Sh @ S with Sh = [[1, tan(sh)], [0, 1]]; inverse-mapping is handled by grid_sample semantics
    a = torch.stack([cos / k, (cos * torch.tan(sh) - sin) / k, tx], -1)
    b = torch.stack([sin / k, (sin * torch.tan(sh) + cos) / k, ty], -1)
    return torch.stack([a, b], 1)


def apply_affine(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(matrices.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(x: torch.Tensor, degrees: float = 10.0, translate: float = 0.1,
                  scale: tuple[float, float] = (0.9, 1.1), shear: float = 0.0, generator=None) -> torch.Tensor:
    return apply_affine(x, affine_matrices(len(x), degrees, translate, scale, shear, generator, x.device))


# --- RandAugment: each op maps (images, strength in [0, 1] per sample) -> images -------------------------
def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None, None]


def _sign(n, generator, device):
    return torch.where(_rand(n, generator, device) < 0.5, -1.0, 1.0)


def _rotate(x, s, g):
    m = affine_matrices(len(x), 0, 0, (1, 1), 0, g, x.device)
    theta = _sign(len(x), g, x.device) * s * 30 * math.pi / 180
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = theta.cos(), -theta.sin(), theta.sin(), theta.cos()
    return apply_affine(x, m)


def _translate(x, s, g):
    m = torch.zeros(len(x), 2, 3, device=x.device)
    m[:, 0, 0] = m[:, 1, 1] = 1
    axis = (_rand(len(x), g, x.device) < 0.5).long()
    m[torch.arange(len(x)), axis, 2] = _sign(len(x), g, x.device) * s * 0.6   # up to 30% of the side
    return apply_affine(x, m)


def _shear(x, s, g):
    m = torch.zeros(len(x), 2, 3, device=x.device)
    m[:, 0, 0] = m[:, 1, 1] = 1
    m[:, 0, 1] = _sign(len(x), g, x.device) * s * 0.3
    return apply_affine(x, m)


def _brightness(x, s, g):
    return (x * _per_sample(1 + _sign(len(x), g, x.device) * s * 0.9)).clamp(0, 1)


def _contrast(x, s, g):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * _per_sample(1 + _sign(len(x), g, x.device) * s * 0.9) + mean).clamp(0, 1)


def _solarize(x, s, g):
    return torch.where(x >= _per_sample(1 - s), 1 - x, x)


def _posterize(x, s, g):
    levels = _per_sample(2 ** (8 - (s * 4).round()))
    return torch.floor(x * (levels - 1) + 0.5) / (levels - 1)


def _autocontrast(x, s, g):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp_min(1e-3)).clamp(0, 1)


def _equalize_like(x, s, g):   # gamma stand-in for histogram equalisation: cheap and batched
    return x.clamp_min(0).pow(_per_sample(1 + _sign(len(x), g, x.device) * s * 0.5))


def _blur(x, s, g):
    import kornia.filters

    sigma = (0.1 + 1.4 * s)[:, None].repeat(1, 2)
    return kornia.filters.gaussian_blur2d(x, (5, 5), sigma)


def _cutout(x, s, g):
    n, _, h, w = x.shape
    size = (s * 0.5 * min(h, w)).round().long().clamp_min(1)
    cy = (_rand(n, g, x.device) * h).long()
    cx = (_rand(n, g, x.device) * w).long()
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_y = ((ys[None] - cy[:, None]).abs() <= size[:, None] // 2)
    in_x = ((xs[None] - cx[:, None]).abs() <= size[:, None] // 2)
    box = in_y[:, :, None] & in_x[:, None, :]
    return x.masked_fill(box[:, None], 0.0)


RANDAUGMENT_OPS: dict[str, Callable] = {
    "identity": lambda x, s, g: x, "rotate": _rotate, "translate": _translate, "shear": _shear,
    "brightness": _brightness, "contrast": _contrast, "solarize": _solarize, "posterize": _posterize,
    "autocontrast": _autocontrast, "gamma": _equalize_like, "blur": _blur, "cutout": _cutout,
}


class RandAugment:
    """Apply `n` randomly chosen ops per sample at magnitude `m` (0..30). Batched: each op runs once on
    the sub-batch of samples that drew it."""

    def __init__(self, n: int = 2, m: float = 9.0, ops: Sequence[str] | None = None, generator=None):
        ops = list(ops or RANDAUGMENT_OPS)
        bad = [o for o in ops if o not in RANDAUGMENT_OPS]
        if bad:
            raise ValueError(f"unknown RandAugment ops {bad}; choose from {sorted(RANDAUGMENT_OPS)}")
        if not 0 <= m <= 30:
            raise ValueError(f"RandAugment magnitude must be in [0, 30], got {m}")
        self.n, self.m, self.ops, self.generator = n, m, ops, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        strength = self.m / 30.0
        for _ in range(self.n):
            choice = torch.randint(0, len(self.ops), (len(x),), generator=self.generator, device=x.device)
            out = x.clone()
            for k, name in enumerate(self.ops):
                sel = (choice == k).nonzero().squeeze(1)
                if len(sel):
                    s = torch.full((len(sel),), strength, device=x.device)
                    out[sel] = RANDAUGMENT_OPS[name](x[sel], s, self.generator)
            x = out
        return x


def compose(*ops: Callable) -> Callable:
    def run(x):
        for op in ops:
            x = op(x)
        return x

    return run


def standard(kind: str) -> Callable | None:
    """Named augmentation policies the recipes use: none, flip, crop, flip+crop, affine, randaugment."""
    policies = {
        "none": None,
        "flip": random_flip,
        "crop": random_crop,
        "flip+crop": compose(random_flip, lambda x: random_crop(x, 2)),
        "affine": random_affine,
        "randaugment": RandAugment(2, 9),
    }
    if kind not in policies:
        from learnloop.errors import UserError

        raise UserError(f"unknown augmentation '{kind}'; choose from: {', '.join(policies)}")
    return policies[kind]
