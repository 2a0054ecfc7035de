"""The noise-prediction U-Net eps_theta(x_t, t [, c]) of DDPM (Ho, Jain & Abbeel, 2020, appendix B), in the
layout of Nichol & Dhariwal (2021, "Improved DDPM"), small enough for 28 x 28 images on a CPU.

    e     = MLP(TimestepEmbedding(t))               sinusoidal embedding (Vaswani et al., 2017, sec. 3.5,
                                                    as Ho et al.'s tensor2tensor code writes it), then
                                                    Linear -> SiLU -> Linear to `4 * base_channels`
    ResBlock(h, e):  r = Conv(SiLU(GN(h)));  r = r + Linear(SiLU(e))[:, :, None, None];
                     r = Conv(Dropout(SiLU(GN(r))));  out = Skip(h) + r      (Skip: 1x1 conv if C changes)
    SelfAttention(h):  h + Proj(MHA(GN(h) as H*W tokens))                   (Ho et al.: 16 x 16 of 32 x 32)
    CrossAttention(h, c, mask): h + Proj(MHA(q = GN(h) tokens, k = v = c)) (Rombach et al., 2022: the
                     conditioning of latent diffusion; `c` is (B, L, context_dim), `mask` (B, L) True at
                     padding keys, which are hidden; a row with every key hidden adds only the projection's
                     bias: a fully padded context can serve as the null condition of classifier-free guidance)

Levels l = 0..len(channel_mult)-1 run at side S / 2^l with base_channels * channel_mult[l] channels:
`num_res_blocks` ResBlocks (each followed by SelfAttention, and CrossAttention when `context_dim` is set,
if the level's side is in `attention_resolutions`), then a stride-2 3x3 conv (not after the last level).
The middle runs ResBlock, SelfAttention (+ CrossAttention), ResBlock at the lowest resolution. The decoder
mirrors the levels with `num_res_blocks + 1` ResBlocks each, every one taking the concatenation of the
current features and one stored skip (the stem's output, each encoder block's output, each downsampled map),
and upsamples by nearest-neighbour x2 + 3x3 conv. The head is GN -> SiLU -> 3x3 conv. As in Ho et al.'s
code, the last conv of every ResBlock, each attention output projection and the head start at zero, so the
initial network is the identity on its residual paths and predicts 0.

Size constraint: both image sides must be divisible by 2^(len(channel_mult) - 1), so the decoder's upsampled
maps meet their skips exactly: 28 x 28 takes up to 3 levels (28, 14, 7), a 7 x 7 latent 1 level, 8 x 8 up
to 4. Any other combination is a UserError that names the sizes that would work. Attention resolutions
are sides of the levels' feature maps (heights for non-square inputs; 7 for the last of three levels
at 28 x 28).

Attention is learnloop.nn.attention.MultiheadAttention (the torch.nn.MultiheadAttention twin), batch first.
GroupNorm uses `norm_groups` groups, which must divide every level's channel count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from learnloop.errors import UserError
from learnloop.nn.attention import MultiheadAttention


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim): [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})],
    w_i = max_period^(-i / (h - 1)), h = dim // 2 (an odd `dim` gets a trailing 0), as Ho et al.'s code."""
    if dim < 4:
        raise ValueError(f"timestep embedding dimension must be >= 4, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2, self.drop = nn.GroupNorm(groups, out_ch), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SpatialAttention(nn.Module):
    """h + Proj(MHA(GN(h))) over the H*W positions: self-attention, or cross-attention to a context
    (B, L, context_dim) with keys hidden where `context_mask` (B, L) is True."""

    def __init__(self, channels: int, groups: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attn = MultiheadAttention(channels, heads, kdim=context_dim, vdim=context_dim, batch_first=True)
        _zero(self.attn.out_proj)
        self.cross = context_dim is not None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)                      # (B, HW, C)
        if self.cross:
            out, _ = self.attn(q, context, context, key_padding_mask=context_mask, need_weights=False)
        else:
            out, _ = self.attn(q, q, q, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class _Stage(nn.Module):
    """A ResBlock followed by optional self- and cross-attention."""

    def __init__(self, res: ResBlock, attn: SpatialAttention | None, cross: SpatialAttention | None):
        super().__init__()
        self.res, self.attn, self.cross = res, attn, cross

    def forward(self, x, emb, context, context_mask):
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if self.cross is not None:
            x = self.cross(x, context, context_mask)
        return x


def _sides(image_size) -> tuple[int, int]:
    sides = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sides):
        raise UserError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return sides


def max_levels(image_size) -> int:
    """The most resolution levels an image of this size allows (sides divisible by 2^(levels - 1))."""
    h, w = _sides(image_size)
    levels = 1
    while h % 2 ** levels == 0 and w % 2 ** levels == 0:
        levels += 1
    return levels


class UNet(nn.Module):
    """eps_theta(x_t, t) (or v_theta) for (B, in_channels, H, W) inputs and (B,) integer timesteps; with
    `context_dim`, forward also takes `context` (B, L, context_dim) and `context_mask` (B, L, True = padding)."""

    def __init__(self, image_size=28, in_channels: int = 1, out_channels: int | None = None,
                 base_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: tuple[int, ...] = (7,), attention_heads: int = 4, dropout: float = 0.0,
                 norm_groups: int = 8, context_dim: int | None = None, mid_attention: bool = True):
        super().__init__()
        self.image_size = _sides(image_size)
        levels = len(channel_mult)
        if levels < 1 or num_res_blocks < 1 or base_channels < 1 or in_channels < 1:
            raise UserError("the U-Net needs at least one level, one ResBlock per level, and positive channels")
        if levels > max_levels(self.image_size):
            h, w = self.image_size
            raise UserError(f"a {h}x{w} input allows at most {max_levels(self.image_size)} U-Net levels (sides "
                            f"must be divisible by 2^(levels-1)); got {levels} (channel_mult {tuple(channel_mult)})")
        sides = [self.image_size[0] // 2 ** i for i in range(levels)]
        unknown = [r for r in attention_resolutions if r not in sides]
        if unknown:
            raise UserError(f"attention resolutions {unknown} are not U-Net feature-map sides; they are {sides}")
        widths = [base_channels * m for m in channel_mult]
        bad = [c for c in [base_channels, *widths] if c % norm_groups or c % attention_heads]
        if bad:
            raise UserError(f"norm_groups={norm_groups} and attention_heads={attention_heads} must divide every "
                            f"channel count {sorted({base_channels, *widths})}")
        if context_dim is not None and context_dim < 1:
            raise UserError(f"context_dim must be a positive int or None, got {context_dim}")
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.context_dim, self.levels = context_dim, levels
        emb_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def stage(cin, cout, attend):
            attn = SpatialAttention(cout, norm_groups, attention_heads) if attend else None
            cross = SpatialAttention(cout, norm_groups, attention_heads, context_dim) \
                if attend and context_dim is not None else None
            return _Stage(ResBlock(cin, cout, emb_dim, norm_groups, dropout), attn, cross)

        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for i, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(stage(ch, width, sides[i] in attention_resolutions))
                ch = width
                skips.append(ch)
            if i < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([stage(ch, ch, mid_attention), stage(ch, ch, False)])
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(ch + skips.pop(), widths[i], sides[i] in attention_resolutions))
                ch = widths[i]
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
        self.head = nn.Sequential(nn.GroupNorm(norm_groups, ch), nn.SiLU(),
                                  _zero(nn.Conv2d(ch, self.out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, t, context, context_mask)
        if t.dim() == 0:
            t = t.expand(len(x))
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb, context, context_mask) if isinstance(block, _Stage) else block(h)
            hs.append(h)
        for block in self.mid:
            h = block(h, emb, context, context_mask)
        for block in self.up:
            if isinstance(block, _Stage):
                h = block(torch.cat([h, hs.pop()], dim=1), emb, context, context_mask)
            else:
                h = block(h)
        return self.head(h)

    def _check(self, x, t, context, context_mask) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.image_size:
            h, w = self.image_size
            raise UserError(f"the U-Net takes (B, {self.in_channels}, {h}, {w}) inputs, got {tuple(x.shape)}")
        if t.dim() > 1 or (t.dim() == 1 and len(t) != len(x)):
            raise UserError(f"timesteps must be a scalar or (B,) = ({len(x)},), got {tuple(t.shape)}")
        if self.context_dim is None:
            if context is not None or context_mask is not None:
                raise UserError("this U-Net has no conditioning path (context_dim=None); pass no context")
            return
        if context is None or context.dim() != 3 or len(context) != len(x) or context.shape[2] != self.context_dim:
            shape = None if context is None else tuple(context.shape)
            raise UserError(f"this U-Net attends to a context (B, L, {self.context_dim}) with B={len(x)}, "
                            f"got {shape}")
        if context_mask is not None and (context_mask.dtype != torch.bool or context_mask.shape != context.shape[:2]):
            raise UserError(f"context_mask must be bool (B, L) = {tuple(context.shape[:2])}, True at padding; "
                            f"got {context_mask.dtype} {tuple(context_mask.shape)}")
