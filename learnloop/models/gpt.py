"""GPT: a decoder-only Transformer language model (Radford et al., 2018; GPT-2: Radford et al., 2019).

    h_0 = W_e[x] + P[0:T]                                   token embedding + learned (or sinusoidal) positions
    h_l = Block(h_{l-1}),  l = 1..n_layers                  pre-norm layer with causal self-attention
    logits = LN_f(h_L) W_e^T                                weight tying (Press & Wolf, 2017): the output
                                                            layer shares the token embedding matrix W_e
Block is `learnloop.nn.transformer.TransformerEncoderLayer(norm_first=True, activation=gelu)` with the
look-ahead mask, so token t's logits depend on tokens 0..t only; the training target is x shifted by one
(causal language modelling, p(x) = prod_t p(x_t | x_<t)).

Initialisation follows GPT-2: N(0, 0.02) weights, and the projections that write into the residual stream
(attention `out_proj`, FFN `linear2`) scaled by 1/sqrt(2 n_layers).

Incremental decoding: each layer keeps a `KVCache` of its projected keys/values, so generating token t
runs the network on one position instead of t; the logits are those of the full forward pass (tested).
The caches are (B, heads, context, head_dim) buffers allocated once per generation; step t writes slot t in
place and attends over slots 0..t (no concatenation). A single new position has no future keys, so that
step skips building the (all-visible) look-ahead mask. When the sequence outgrows the context window,
generation continues on the last `context` tokens; the positions then shift, so that step empties the
caches and recomputes the window exactly as the uncached path does.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from learnloop.data.text import Vocab
from learnloop.errors import UserError
from learnloop.models.sampling import check_sampling, sample_next
from learnloop.nn.attention import KVCache
from learnloop.nn.positional import POSITIONAL
from learnloop.nn.transformer import TransformerEncoder, TransformerEncoderLayer
from learnloop.utils.threads import FastestThreads


class GPT(nn.Module):
    def __init__(self, vocab_size: int, context: int = 256, d_model: int = 256, n_heads: int = 4,
                 n_layers: int = 4, dim_feedforward: int | None = None, dropout: float = 0.1,
                 tie_weights: bool = True, positional: str = "learned"):
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {', '.join(POSITIONAL)}, got '{positional}'")
        self.vocab_size, self.context, self.d_model = vocab_size, context, d_model
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = POSITIONAL[positional](d_model, max_len=context, dropout=dropout)
        layer = TransformerEncoderLayer(d_model, n_heads, dim_feedforward or 4 * d_model, dropout,
                                        activation="gelu", batch_first=True, norm_first=True)
        self.blocks = TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d_model))
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self._init(n_layers)
        if tie_weights:
            self.head.weight = self.tok.weight

    def _init(self, n_layers: int) -> None:
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("out_proj.weight", "linear2.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def new_cache(self, static: bool = True) -> list[KVCache]:
        """One empty `KVCache` per layer, each holding up to `context` positions; `static`: one-token steps
        attend over the whole buffer with a mask, so every decoding step has the same shapes."""
        return [KVCache(max_len=self.context, static=static) for _ in self.blocks.layers]

    def features(self, ids: torch.Tensor, kv_caches: list[KVCache] | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d_model) final (normalised) hidden states h_L."""
        if ids.dim() != 2:
            raise ValueError(f"ids must be (batch, time), got shape {tuple(ids.shape)}")
        offset = len(kv_caches[0]) if kv_caches is not None else 0
        if offset + ids.shape[1] > self.context:
            raise UserError(f"sequence of {offset + ids.shape[1]} tokens exceeds the context of {self.context}")
        h = self.pos(self.tok(ids), offset=offset)
        # one new position after cached ones sees every key: the look-ahead mask would hide nothing
        causal = kv_caches is None or ids.shape[1] > 1
        return self.blocks(h, is_causal=causal, kv_caches=kv_caches)

    def forward(self, ids: torch.Tensor, kv_caches: list[KVCache] | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab) logits. With `kv_caches` (from `new_cache()`), `ids` continue
        the cached positions and only their logits are computed."""
        return self.head(self.features(ids, kv_caches))

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.dim() != 2 or ids.shape[1] == 0:
            raise UserError(f"the prompt must be a non-empty (batch, time) tensor of ids, got {tuple(ids.shape)}")
        if ids.shape[1] > self.context:
            raise UserError(f"prompt of {ids.shape[1]} tokens is longer than the context of {self.context}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise UserError(f"prompt ids must be in [0, {self.vocab_size}), got {int(ids.min())}..{int(ids.max())}")

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, greedy: bool = False, use_cache: bool = True,
                 generator: torch.Generator | None = None, static_cache: bool = True,
                 threads: int | None = None) -> torch.Tensor:
        """Append `max_new_tokens` sampled tokens to the (B, T) prompt `ids`; returns (B, T + new).
        `use_cache=False` reruns the whole window per token (the reference path); `static_cache=False` keeps
        the cache but attends over slots 0..t with per-step shapes (the readable cached path). `threads`:
        torch threads for the one-token cached steps; None times the first steps on 1 thread and on the
        current count and keeps the faster (`learnloop.utils.threads.FastestThreads`); the prompt and the
        uncached path run on the current count."""
        self._check_ids(ids)
        if not greedy:
            check_sampling(temperature, top_k, top_p)
        if max_new_tokens < 0:
            raise UserError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        was_training = self.training
        self.eval()
        B, T = ids.shape
        out = ids.new_empty(B, T + max_new_tokens)
        out[:, :T] = ids
        caches = self.new_cache(static_cache) if use_cache else None
        with FastestThreads(threads if use_cache else torch.get_num_threads()) as step_threads:
            for t in range(T, T + max_new_tokens):           # out[:, :t] is decoded; sample token t
                window = out[:, max(0, t - self.context):t]
                if caches is None:
                    logits = self(window)[:, -1]
                else:
                    if t > self.context:                      # the window slid: positions changed, recompute
                        for cache in caches:
                            cache.reset()
                    if len(caches[0]) == 0:                   # the prompt (or a new window): the usual threads
                        with FastestThreads(step_threads.original):
                            logits = self(window, caches)[:, -1]
                    else:
                        logits = step_threads(partial(self, out[:, t - 1:t], caches))[:, -1]
                out[:, t] = sample_next(logits, temperature, top_k, top_p, generator, greedy)
        self.train(was_training)
        return out


def generate_text(model: GPT, vocab: Vocab, prompt: str, max_new_tokens: int = 200, **sampling) -> str:
    """Continue a character-level `prompt`; characters outside the vocabulary are a one-line UserError."""
    if not prompt:
        raise UserError("the prompt is empty; give at least one character")
    ids = torch.tensor([vocab.encode(list(prompt), strict=True)])
    out = model.generate(ids, max_new_tokens, **sampling)
    return prompt + "".join(vocab.decode(out[0, ids.shape[1]:].tolist()))
