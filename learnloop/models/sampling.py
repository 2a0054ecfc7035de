"""Sampling the next token from language-model logits z (one row per sequence).

    temperature (Ackley et al., 1985):  p = softmax(z / T); T -> 0 approaches greedy argmax, T > 1 flattens
    top-k (Fan et al., 2018):           keep the k largest logits, renormalise
    top-p / nucleus (Holtzman et al., 2020): keep the smallest set of most likely tokens whose probability
                                        sums to at least p, renormalise
Filters apply in the order temperature, top-k, top-p. Bad parameters are a one-line `UserError`.
"""

from __future__ import annotations

import torch

from learnloop.errors import UserError


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature} (use greedy decoding for argmax)")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise UserError(f"top_k must be a positive integer, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set the logits outside the top-k / nucleus to -inf (last dimension = vocabulary)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(int(top_k), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs          # mass of the strictly more likely tokens
        drop_sorted = before >= top_p                  # the first token always stays (before = 0 < p)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None,
                greedy: bool = False) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids."""
    if greedy:
        return logits.argmax(dim=-1)
    check_sampling(temperature, top_k, top_p)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
