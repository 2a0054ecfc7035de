"""Transformer encoder and decoder layers and the encoder-decoder Transformer (Vaswani et al., 2017).

Encoder layer, post-norm (the paper, sec. 3.1) and pre-norm (Xiong et al., 2020; GPT-2), with
SA = multi-head self-attention and FFN(x) = W_2 act(W_1 x + b_1) + b_2 (eq. 2):
    post-norm:  x = LN_1(x + SA(x));          x = LN_2(x + FFN(x))
    pre-norm:   x = x + SA(LN_1(x));          x = x + FFN(LN_2(x))
Decoder layer, with CA = attention from the target (queries) to the encoder output `memory` (keys/values):
    post-norm:  x = LN_1(x + SA(x, look-ahead mask));  x = LN_2(x + CA(x, memory));  x = LN_3(x + FFN(x))
    pre-norm:   x = x + SA(LN_1(x));                   x = x + CA(LN_2(x), memory);  x = x + FFN(LN_3(x))
Dropout (p = `dropout`) follows every sub-layer before its residual sum and sits inside the FFN.

Classes, constructor arguments, parameter names and forward arguments are those of
`torch.nn.TransformerEncoderLayer`, `TransformerDecoderLayer`, `TransformerEncoder`, `TransformerDecoder`
and `Transformer`, so their state dicts load unchanged. Keyword-only additions: `kv_cache` on the encoder
layer (decoder-only models reuse it as their causally-masked block, see learnloop.models.gpt) and
`need_weights` on the decoder, which then also returns every layer's self- and cross-attention maps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from learnloop.nn.attention import KVCache, MultiheadAttention, look_ahead_mask

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def _activation(activation: str | Callable) -> Callable:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} or a callable, got '{activation}'")
    return ACTIVATIONS[activation]


class TransformerEncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable = F.relu, layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **fk)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **fk)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **fk)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal, kv_cache):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal, kv_cache=kv_cache)[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False, *,
                kv_cache: KVCache | None = None) -> torch.Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal, kv_cache)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal, kv_cache))
            x = self.norm2(x + self._ff_block(x))
        return x


class TransformerDecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable = F.relu, layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **fk)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first, **fk)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **fk)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **fk)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal, need_weights):
        x, w = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              need_weights=need_weights, is_causal=is_causal)
        return self.dropout1(x), w

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal, need_weights):
        x, w = self.multihead_attn(x, mem, mem, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                   need_weights=need_weights, is_causal=is_causal)
        return self.dropout2(x), w

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, tgt_key_padding_mask: torch.Tensor | None = None,
                memory_key_padding_mask: torch.Tensor | None = None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False, *, need_weights: bool = False):
        """Returns the new target states; with need_weights also {"self": (B, L, L), "cross": (B, L, S)}."""
        x = tgt
        if self.norm_first:
            sa, w_self = self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal, need_weights)
            x = x + sa
            ca, w_cross = self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask,
                                          memory_is_causal, need_weights)
            x = x + ca
            x = x + self._ff_block(self.norm3(x))
        else:
            sa, w_self = self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal, need_weights)
            x = self.norm1(x + sa)
            ca, w_cross = self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal,
                                          need_weights)
            x = self.norm2(x + ca)
            x = self.norm3(x + self._ff_block(x))
        if need_weights:
            return x, {"self": w_self, "cross": w_cross}
        return x


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    if n < 1:
        raise ValueError(f"num_layers must be >= 1, got {n}")
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


class TransformerEncoder(nn.Module):
    """A stack of `num_layers` deep copies of `encoder_layer`, then the optional final `norm`."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: nn.Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers, self.norm = num_layers, norm

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool | None = None, *,
                kv_caches: list[KVCache] | None = None) -> torch.Tensor:
        x = src
        for i, layer in enumerate(self.layers):
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal),
                      kv_cache=kv_caches[i] if kv_caches is not None else None)
        return self.norm(x) if self.norm is not None else x


class TransformerDecoder(nn.Module):
    """A stack of `num_layers` deep copies of `decoder_layer`, then the optional final `norm`."""

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: nn.Module | None = None):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers, self.norm = num_layers, norm

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, tgt_key_padding_mask: torch.Tensor | None = None,
                memory_key_padding_mask: torch.Tensor | None = None, tgt_is_causal: bool | None = None,
                memory_is_causal: bool = False, *, need_weights: bool = False):
        """Returns the decoded states; with need_weights also a list of per-layer attention maps."""
        x, maps = tgt, []
        for layer in self.layers:
            out = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                        tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                        tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal,
                        need_weights=need_weights)
            if need_weights:
                x, w = out
                maps.append(w)
            else:
                x = out
        if self.norm is not None:
            x = self.norm(x)
        return (x, maps) if need_weights else x


class Transformer(nn.Module):
    """The encoder-decoder model of the paper (fig. 1) without embeddings and output layer: both stacks end
    in a LayerNorm, as in torch.nn.Transformer."""

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable = F.relu, custom_encoder: nn.Module | None = None,
                 custom_decoder: nn.Module | None = None, layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                            batch_first, norm_first, bias, **fk)
            self.encoder = TransformerEncoder(layer, num_encoder_layers,
                                              nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                            batch_first, norm_first, bias, **fk)
            self.decoder = TransformerDecoder(layer, num_decoder_layers,
                                              nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **fk))
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        for p in self.parameters():           # torch.nn.Transformer's initialisation
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @staticmethod
    def generate_square_subsequent_mask(sz: int, device=None, dtype=None) -> torch.Tensor:
        """(sz, sz) float mask: 0 on and below the diagonal, -inf above (the look-ahead mask)."""
        dtype = dtype or torch.float32
        return torch.zeros(sz, sz, dtype=dtype, device=device).masked_fill_(look_ahead_mask(sz, device=device),
                                                                            float("-inf"))

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, src_mask: torch.Tensor | None = None,
                tgt_mask: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, tgt_key_padding_mask: torch.Tensor | None = None,
                memory_key_padding_mask: torch.Tensor | None = None, src_is_causal: bool | None = None,
                tgt_is_causal: bool | None = None, memory_is_causal: bool = False) -> torch.Tensor:
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)
