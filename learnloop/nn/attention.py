"""Scaled dot-product and multi-head attention (Vaswani et al., 2017, "Attention Is All You Need").

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V                                  (eq. 1)
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
        head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)                                       (sec. 3.2.2)

Symbols in code: q, k, v are the projected queries/keys/values split into h = `num_heads` heads of
d_k = `head_dim` = embed_dim / h features; M (`mask`) is an additive mask, 0 where a query may attend and
-inf where it may not. Two masks build M:
- the padding mask (`key_padding_mask`, (B, S), True at <pad> keys) hides padding from every query;
- the look-ahead mask (`look_ahead_mask(L)`, True above the diagonal) hides position j > i from query i,
  so output i depends on inputs 0..i only (decoder self-attention).
Boolean masks follow torch.nn.MultiheadAttention: True means "may NOT attend"; float masks are added.

A query that may attend to no key at all (its row of M is all -inf: a fully padded sequence, or a left-padded
position under the look-ahead mask) gets weights 0 and attention output 0, so the layer returns out_proj's
bias there. This is what torch.nn.MultiheadAttention returns with need_weights=False (its SDPA and fast
paths); plain softmax would give 0/0 = NaN, and that NaN would reach real positions of the next layer
through 0 * NaN in weights @ V. Deliberate difference: torch with need_weights=True returns NaN output and
NaN weights in such a row; ours returns the same zeros as with need_weights=False, and weights of 0 there
(so such a row of the returned weights sums to 0, every other row to 1).

`MultiheadAttention` has the constructor, parameter names (`in_proj_weight` stacks [W^Q; W^K; W^V],
`out_proj` is W^O) and forward signature of `torch.nn.MultiheadAttention`, so a torch state dict loads
unchanged. One addition, keyword-only: `kv_cache`, a `KVCache` that keeps the projected keys and values
of earlier positions, so autoregressive decoding projects only the new token (Pope et al., 2022 describe
this standard inference optimisation); with `is_causal=True` the look-ahead mask is offset by the number of
cached positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def look_ahead_mask(size: int, key_size: int | None = None, device=None) -> torch.Tensor:
    """(L, S) bool, True where key j lies in the future of query i. With S > L the queries are the last L
    of S positions (decoding with S - L cached positions): query i sits at absolute position S - L + i."""
    key_size = size if key_size is None else key_size
    offset = key_size - size
    i = torch.arange(size, device=device)[:, None]
    j = torch.arange(key_size, device=device)[None, :]
    return j > i + offset


def padding_mask(ids: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """(B, S) bool key_padding_mask, True at padding tokens."""
    return ids == pad_id


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Bool (True = hidden) -> 0 / -inf float mask; float masks pass through (cast to `dtype`)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise TypeError(f"attention masks must be bool or float, got {mask.dtype}")
    return mask.to(dtype)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                                 dropout_p: float = 0.0, training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 on (..., L, d_k) queries, (..., S, d_k) keys, (..., S, d_v) values; `mask` is additive (or bool,
    True = hidden) and broadcasts to (..., L, S). Returns (output (..., L, d_v), weights (..., L, S)).
    A query row with every key hidden (all -inf) has weights 0 and output 0, like
    `torch.nn.functional.scaled_dot_product_attention`; its gradient is 0 too."""
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    if mask is None:
        weights = scores.softmax(dim=-1)
    else:
        scores = scores + additive_mask(mask, scores.dtype)
        # a query whose keys are all hidden gets all-zero weights (so output 0), as torch's SDPA does: softmax
        # of an all -inf row is 0/0 = NaN, which would reach real positions of the next layer through 0 * NaN
        hidden = (scores == float("-inf")).all(dim=-1, keepdim=True)
        weights = scores.masked_fill(hidden, 0.0).softmax(dim=-1).masked_fill(hidden, 0.0)
    if dropout_p > 0.0 and training:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


class KVCache:
    """Projected keys and values of the positions decoded so far, for one layer, in preallocated
    (B, H, capacity, d_k) buffers written in place: `append` copies the n new positions into slots
    [t, t + n) and returns views of slots [0, t + n), so a decoding step neither concatenates nor allocates.
    `max_len` (a model's context) sizes the buffers on the first append, so a generation allocates once,
    and appending past it is an error; without `max_len` the capacity doubles whenever it runs out.
    `reset()` empties the cache and keeps the buffers for reuse.

    Static-shape decoding (`static()`, on unless `static=False`): with `max_len`, the buffers are zero-filled and the cache keeps an
    additive (1, 1, 1, max_len) mask, 0 at filled slots and -inf at empty ones, updated in place. A one-token
    step then attends over the whole buffer: every step has the same shapes (scores (B, H, 1, max_len)),
    with no views or masks built per step. The empty slots get weight exp(-inf) = 0 and hold zeros, so the
    output is that of attending over slots 0..t (equal up to floating-point summation order; tested)."""

    def __init__(self, max_len: int | None = None, static: bool = True):
        if max_len is not None and (isinstance(max_len, bool) or int(max_len) != max_len or max_len < 1):
            raise ValueError(f"max_len must be a positive integer or None, got {max_len}")
        self.max_len = max_len
        self.is_static = bool(static) and max_len is not None     # one-token steps attend over the whole buffer
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def k(self) -> torch.Tensor | None:
        """(B, H, T, d_k) cached keys (a view of the buffer), None when empty."""
        return self._k[:, :, :self._len] if self._len else None

    @property
    def v(self) -> torch.Tensor | None:
        """(B, H, T, d_v) cached values (a view of the buffer), None when empty."""
        return self._v[:, :, :self._len] if self._len else None

    def _fits(self, buf: torch.Tensor | None, new: torch.Tensor) -> bool:
        return (buf is not None and buf.shape[:2] == new.shape[:2] and buf.shape[3] == new.shape[3]
                and buf.dtype == new.dtype and buf.device == new.device)

    def _grow(self, buf: torch.Tensor | None, new: torch.Tensor, end: int) -> torch.Tensor:
        B, H, _, d = new.shape
        if buf is not None and self._len and not self._fits(buf, new):
            raise ValueError(f"new keys/values {tuple(new.shape)} ({new.dtype}) do not continue the cached "
                             f"{tuple(buf[:, :, :self._len].shape)} ({buf.dtype}); reset() the cache first")
        if self._fits(buf, new) and end <= buf.shape[2]:
            return buf
        capacity = self.max_len if self.max_len is not None else max(end, 2 * buf.shape[2] if buf is not None else 0)
        grown = new.new_zeros(B, H, capacity, d) if self.max_len is not None else new.new_empty(B, H, capacity, d)
        if self._len:
            grown[:, :, :self._len] = buf[:, :, :self._len]
        return grown

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, H, n, d) keys and values at positions len..len+n-1; return all (B, H, len+n, d) so far."""
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"keys and values must be (B, H, n, d) with equal B, H, n, got "
                             f"{tuple(k.shape)} and {tuple(v.shape)}")
        start, end = self._len, self._len + k.shape[2]
        if self.max_len is not None and end > self.max_len:
            raise ValueError(f"the cache holds at most {self.max_len} positions, got {end}")
        self._k, self._v = self._grow(self._k, k, end), self._grow(self._v, v, end)
        self._k[:, :, start:end] = k
        self._v[:, :, start:end] = v
        self._len = end
        if self.max_len is not None:
            if self._mask is None or self._mask.dtype != k.dtype or self._mask.device != k.device:
                self._mask = k.new_full((1, 1, 1, self.max_len), float("-inf"))
                self._mask[..., :start] = 0.0
            self._mask[..., start:end] = 0.0
        return self._k[:, :, :end], self._v[:, :, :end]

    def static(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys, values, mask) over the whole capacity: (B, H, max_len, d) buffers and the (1, 1, 1, max_len)
        additive mask of the filled slots (see the class docstring); only for a cache with `max_len`."""
        if not self.is_static or not self._len:
            raise ValueError("static() needs a non-empty cache made with max_len and static=True")
        return self._k, self._v, self._mask

    def reset(self) -> None:
        self._len = 0
        if self._mask is not None:
            self._mask.fill_(float("-inf"))


class MultiheadAttention(nn.Module):
    """Drop-in twin of `torch.nn.MultiheadAttention` (see the module docstring)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be > 0, got {embed_dim} and {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        fk = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.head_dim = embed_dim // num_heads
        self.batch_first = batch_first
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **fk))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **fk))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **fk))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **fk))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **fk))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **fk)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **fk))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **fk))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # the initialisation torch.nn.MultiheadAttention uses: Xavier-uniform projections, zero biases
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        for b in (self.bias_k, self.bias_v):
            if b is not None:
                nn.init.xavier_normal_(b)

    def _project(self, query, key, value):
        if self._qkv_same_embed_dim and query is key and key is value:      # self-attention: one matmul
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
            return q, k, v
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.split(E)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q, b_k, b_v = self.in_proj_bias.split(E) if self.in_proj_bias is not None else (None, None, None)
        return F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False, *, kv_cache: KVCache | None = None):
        """query (L, B, E) or (B, L, E) with batch_first (or unbatched (L, E)); key/value likewise with S.
        key_padding_mask (B, S); attn_mask (L, S) or (B*num_heads, L, S). Returns (output, weights), weights
        (B, L, S) averaged over heads, (B, H, L, S) if not average_attn_weights, None if not need_weights."""
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif query.dim() != 3:
            raise ValueError(f"query must be 2-D (unbatched) or 3-D, got shape {tuple(query.shape)}")
        if self.batch_first and not unbatched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        L, B, E = query.shape
        if E != self.embed_dim:
            raise ValueError(f"query has {E} features, expected embed_dim={self.embed_dim}")
        if key.shape[:2] != value.shape[:2] or key.shape[1] != B:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} do not match query "
                             f"{tuple(query.shape)} (sequence-first layout)")
        H, d = self.num_heads, self.head_dim
        q, k, v = self._project(query, key, value)                    # (L|S, B, E)
        dtype = q.dtype
        attn_mask = additive_mask(attn_mask, dtype)
        key_padding_mask = additive_mask(key_padding_mask, dtype)
        if kv_cache is not None and (self.bias_k is not None or self.add_zero_attn):
            raise ValueError("kv_cache does not support add_bias_kv or add_zero_attn")
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(1, B, E)])
            v = torch.cat([v, self.bias_v.expand(1, B, E)])
            attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
            key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
        # (T, B, E) -> (B, H, T, d)
        q, k, v = (t.reshape(t.shape[0], B, H, d).permute(1, 2, 0, 3) for t in (q, k, v))
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(B, H, 1, d)], dim=2)
            v = torch.cat([v, v.new_zeros(B, H, 1, d)], dim=2)
            attn_mask = F.pad(attn_mask, (0, 1)) if attn_mask is not None else None
            key_padding_mask = F.pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
            if L == 1 and kv_cache.is_static and attn_mask is None and key_padding_mask is None and not need_weights:
                return self._static_step(q, kv_cache, B, unbatched), None
        S_all = k.shape[2]
        if is_causal and attn_mask is None:
            attn_mask = additive_mask(look_ahead_mask(L, S_all, device=q.device), dtype)
        mask = None
        if attn_mask is not None:
            if attn_mask.dim() == 2:
                mask = attn_mask.reshape(1, 1, L, S_all)
            elif attn_mask.dim() == 3:
                mask = attn_mask.reshape(B, H, L, S_all)
            else:
                raise ValueError(f"attn_mask must be 2-D or 3-D, got shape {tuple(attn_mask.shape)}")
        if key_padding_mask is not None:
            if key_padding_mask.shape != (B, S_all):
                raise ValueError(f"key_padding_mask must have shape {(B, S_all)} "
                                 f"(batch, key length), got {tuple(key_padding_mask.shape)}")
            kpm = key_padding_mask.reshape(B, 1, 1, S_all)
            mask = kpm if mask is None else mask + kpm
        out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout, self.training)
        out = self._output(out, L, B, unbatched)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)
        if unbatched:
            weights = weights.squeeze(0)
        return out, weights

    def _output(self, out: torch.Tensor, L: int, B: int, unbatched: bool) -> torch.Tensor:
        """(B, H, L, d) head outputs -> W^O applied, in the caller's layout."""
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(L, B, self.embed_dim))      # (L, B, E)
        if self.batch_first and not unbatched:
            out = out.transpose(0, 1)
        return out.squeeze(1) if unbatched else out

    def _static_step(self, q: torch.Tensor, kv_cache: KVCache, B: int, unbatched: bool) -> torch.Tensor:
        """One query over the whole preallocated cache (`KVCache.static`): eq. 1 with fixed shapes."""
        k, v, mask = kv_cache.static()
        scores = torch.baddbmm(mask.expand(B, self.num_heads, 1, -1).reshape(-1, 1, mask.shape[-1]),
                               q.reshape(-1, 1, self.head_dim), k.reshape(-1, k.shape[2], self.head_dim).transpose(1, 2),
                               alpha=1.0 / math.sqrt(self.head_dim))
        weights = scores.softmax(dim=-1)
        if self.dropout > 0.0 and self.training:
            weights = F.dropout(weights, p=self.dropout)
        out = torch.bmm(weights, v.reshape(-1, v.shape[2], self.head_dim))
        return self._output(out.reshape(B, self.num_heads, 1, self.head_dim), 1, B, unbatched)
