"""Positional encodings: fixed sinusoids (Vaswani et al., 2017, sec. 3.5) and learned position embeddings
(Gehring et al., 2017; used by BERT and GPT).

Sinusoidal, for position `pos` and feature pair i = 0 .. d_model/2 - 1, with omega_i = 10000^(-2i/d_model):
    PE(pos, 2i)   = sin(pos * omega_i)
    PE(pos, 2i+1) = cos(pos * omega_i)
Each pair rotates by the angle k * omega_i when pos moves by k, so PE(pos + k) = R_k PE(pos) with
R_k = blockdiag([[cos k w_i, sin k w_i], [-sin k w_i, cos k w_i]]) independent of pos: attention can
express relative offsets as linear functions of the encodings (the paper's motivation).

Both modules add the encoding to a batch-first (B, T, E) input: x + PE[offset : offset + T]. `offset` is
the number of positions already decoded (incremental decoding with a KV cache).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_encoding(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """(N,) positions (int or float) -> (N, d_model) encodings, interleaved sin/cos as in the paper."""
    if d_model % 2:
        raise ValueError(f"sinusoidal encodings need an even d_model, got {d_model}")
    omega = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    angle = positions.to(torch.float64)[:, None] * omega[None, :]
    pe = torch.empty(len(positions), d_model, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = angle.sin(), angle.cos()
    return pe.float()


class _PositionalEncoding(nn.Module):
    max_len: int

    def _check(self, x: torch.Tensor, offset: int) -> int:
        if x.dim() != 3:
            raise ValueError(f"expected a batch-first (B, T, E) input, got shape {tuple(x.shape)}")
        T = x.shape[1]
        if offset < 0 or offset + T > self.max_len:
            raise ValueError(f"positions {offset}..{offset + T - 1} exceed the maximum length {self.max_len}")
        return T


class SinusoidalPositionalEncoding(_PositionalEncoding):
    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0):
        super().__init__()
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_encoding(torch.arange(max_len), d_model), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        T = self._check(x, offset)
        return self.dropout(x + self.pe[offset:offset + T].to(x.dtype))


class LearnedPositionalEncoding(_PositionalEncoding):
    def __init__(self, d_model: int, max_len: int = 512, dropout: float = 0.0):
        super().__init__()
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        T = self._check(x, offset)
        return self.dropout(x + self.weight[offset:offset + T])


POSITIONAL = {"sinusoidal": SinusoidalPositionalEncoding, "learned": LearnedPositionalEncoding}
