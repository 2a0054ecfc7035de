"""CLIP: contrastive language-image pre-training (Radford et al., 2021), small enough for Fashion-MNIST on a CPU.

For a batch of N (image, text) pairs (fig. 3 of the paper, its numpy-like pseudo-code):

    I_f = image_encoder(x)          (N, F)      a small CNN: [conv-BN-ReLU-maxpool] x 2, conv-BN-ReLU, linear-ReLU
    T_f, H = text_encoder(ids)      (N, W), (N, T, W)   pooled state and every token's state
    I_e = l2_normalize(I_f W_i)     (N, E)      linear projections to the joint space, unit length
    T_e = l2_normalize(T_f W_t)     (N, E)
    logits = exp(s) * I_e T_e^T     (N, N)      cosine similarities scaled by the learned temperature

with s = `logit_scale`, initialised to log(1 / 0.07) and clamped at log(100) in the forward pass ("clipped to
prevent scaling the logits by more than 100", sec. 2.5; the clamp also stops its gradient there). The loss on
`logits` is symmetric InfoNCE (learnloop.losses.contrastive).

Text encoder: token embedding + learned positions, then a stack of the scratch pre-norm Transformer encoder
layers (learnloop.nn.transformer, GELU) and a final LayerNorm; the padding mask (True at [PAD]) hides padding
keys. Pooling: "eos" takes the state at the [EOS] token (the paper's choice, its last real token; captions are
right-padded, so it sits at position (number of non-pad tokens) - 1), "mean" averages the non-pad states.
Deliberate difference: the paper's text Transformer uses masked (causal) self-attention; ours attends both
ways, so every token state H_t (what a text-to-image U-Net cross-attends to) sees the whole caption.

`encode_text(ids, pad_mask) -> (embedding (N, E), token_states H (N, T, W))`: H is the final LayerNorm's
output; its padding rows are not meaningful, so cross-attention passes the same `pad_mask` as
`memory_key_padding_mask`. `text_width` is W. Zero-shot classification embeds one prompt per class (or K
per class, `prompt_ensemble`: the mean of the K unit embeddings, renormalised, sec. 3.1.4) and predicts
argmax_c of I_e . T_c.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from learnloop.nn.positional import LearnedPositionalEncoding
from learnloop.nn.transformer import TransformerEncoder, TransformerEncoderLayer

POOLINGS = ("eos", "mean")
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


class ImageEncoder(nn.Module):
    """(N, C, H, W) -> (N, feature_dim): conv blocks of `width` and 2 `width` channels (each conv 3x3, BN,
    ReLU, 2x2 max-pool), a conv of 2 `width` channels at H/4 x W/4, then a ReLU linear layer."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 32, feature_dim: int = 256,
                 dropout: float = 0.0):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")

        def conv(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers, nn.MaxPool2d(2)) if pool else nn.Sequential(*layers)

        self.conv = nn.Sequential(conv(in_channels, width, True), conv(width, 2 * width, True),
                                  conv(2 * width, 2 * width, False))
        side = image_size // 4
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * side * side, feature_dim),
                                nn.ReLU(inplace=True))
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


class TextEncoder(nn.Module):
    """(N, T) ids and (N, T) pad_mask -> (pooled (N, width), token states (N, T, width)); module docstring."""

    def __init__(self, vocab_size: int, context: int, width: int = 128, layers: int = 2, heads: int = 4,
                 dim_feedforward: int | None = None, dropout: float = 0.0, pooling: str = "eos", pad_id: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got '{pooling}'")
        self.vocab_size, self.context, self.width, self.pooling = vocab_size, context, width, pooling
        self.tok = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.pos = LearnedPositionalEncoding(width, max_len=context, dropout=dropout)
        layer = TransformerEncoderLayer(width, heads, dim_feedforward or 4 * width, dropout, activation="gelu",
                                        batch_first=True, norm_first=True)
        self.transformer = TransformerEncoder(layer, layers, norm=nn.LayerNorm(width))
        for name, p in self.named_parameters():      # GPT-2's initialisation (as learnloop.models.gpt)
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("out_proj.weight", "linear2.weight")) else 0.02
                nn.init.normal_(p, std=std)
        with torch.no_grad():
            self.tok.weight[pad_id].zero_()

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.dim() != 2 or ids.shape != pad_mask.shape:
            raise ValueError(f"ids and pad_mask must both be (N, T), got {tuple(ids.shape)} and "
                             f"{tuple(pad_mask.shape)}")
        if ids.shape[1] > self.context:
            raise ValueError(f"{ids.shape[1]} tokens exceed the text encoder's context of {self.context}")
        real = ~pad_mask
        if not bool(real.any(1).all()):
            raise ValueError("every text needs at least one non-padding token")
        h = self.transformer(self.pos(self.tok(ids)), src_key_padding_mask=pad_mask)
        if self.pooling == "eos":
            last = real.long().sum(1) - 1                       # right padding: [EOS] is the last real token
            pooled = h[torch.arange(len(h), device=h.device), last]
        else:
            w = real.to(h.dtype)[..., None]
            pooled = (h * w).sum(1) / w.sum(1)
        return pooled, h


class CLIP(nn.Module):
    def __init__(self, image_encoder: nn.Module, text_encoder: TextEncoder, embed_dim: int = 128,
                 logit_scale_init: float = INIT_LOGIT_SCALE, logit_scale_max: float = MAX_LOGIT_SCALE):
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.image_proj = nn.Linear(image_encoder.feature_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text_encoder.width, embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=image_encoder.feature_dim ** -0.5)
        nn.init.normal_(self.text_proj.weight, std=text_encoder.width ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.logit_scale_max, self.embed_dim = float(logit_scale_max), embed_dim

    @property
    def text_width(self) -> int:
        """W, the width of `encode_text`'s token states (what cross-attention attends to)."""
        return self.text_encoder.width

    def scale(self) -> torch.Tensor:
        """exp(min(s, log 100)): the inverse temperature that multiplies the cosine similarities."""
        return self.logit_scale.clamp(max=self.logit_scale_max).exp()

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) image encoder output before the projection (what a linear probe is trained on)."""
        return self.image_encoder(x)

    def project_image(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image features (N, F) -> joint-space embeddings (N, E), unit length unless `normalize=False`."""
        e = self.image_proj(features)
        return F.normalize(e, dim=-1) if normalize else e

    def encode_image(self, x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.project_image(self.image_encoder(x), normalize)

    def encode_text(self, ids: torch.Tensor, pad_mask: torch.Tensor, normalize: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(joint-space embedding (N, E), unit length unless `normalize=False`; token states (N, T, W))."""
        pooled, states = self.text_encoder(ids, pad_mask)
        e = self.text_proj(pooled)
        return (F.normalize(e, dim=-1) if normalize else e), states

    def forward(self, images: torch.Tensor, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """logits_per_image (N_images, N_texts) = exp(s) I_e T_e^T; its transpose is logits_per_text."""
        return self.scale() * self.encode_image(images) @ self.encode_text(ids, pad_mask)[0].T


def prompt_ensemble(embeddings: torch.Tensor) -> torch.Tensor:
    """(C, K, E) text embeddings of K prompts per class -> (C, E): the mean of the unit-length embeddings over
    the K prompts, renormalised to unit length (Radford et al., 2021, sec. 3.1.4)."""
    if embeddings.dim() != 3:
        raise ValueError(f"expected (classes, prompts, dim) embeddings, got shape {tuple(embeddings.shape)}")
    return F.normalize(F.normalize(embeddings, dim=-1).mean(1), dim=-1)
