"""Sequence models built on the scratch recurrent layers of `learnloop.nn`.

- `RecurrentEncoder`: token embedding -> a stack of single-layer RNN/LSTM/GRU layers (kept as separate
  modules so each layer is its own parameter group, as in AWD-LSTM / ULMFiT), dropout in between.
- `SequenceClassifier`: encoder -> pooling over real (non-pad) steps -> linear head. Pooling `last` takes
  h at each sequence's last step (both directions when bidirectional); `concat` is ULMFiT's
  [h_last, max_t h_t, mean_t h_t] (Howard & Ruder, 2018). The head is dropout -> linear, or with
  `head_hidden` > 0 ULMFiT's two-layer head: norm -> dropout -> Linear(3D, head_hidden) -> ReLU -> norm ->
  dropout -> linear, where norm is LayerNorm rather than the paper's BatchNorm: with ~10 steps per epoch
  (tens of labelled examples) BatchNorm's running statistics lag far behind the batch statistics and
  eval-mode predictions collapse to one class (measured); LayerNorm has no running statistics.
- `CharLM`: encoder -> linear decoder over the vocabulary; p(x_{t+1} | x_<=t) = softmax(W h_t + b);
  `sample` draws text with temperature tau: p_i ∝ exp(logit_i / tau).
- `SequenceRegressor`: encoder over real-valued inputs -> linear read-out of the next value.

Every model takes ids (B, T) plus optional lengths (B,); sequences longer than `max_len` are an error.
"""

from __future__ import annotations

import torch
from torch import nn

from learnloop.errors import UserError
from learnloop.nn.recurrent import RECURRENT

CELLS = tuple(RECURRENT)
POOLINGS = ("last", "mean", "concat")


def _check_len(ids: torch.Tensor, max_len: int) -> None:
    if max_len and ids.shape[1] > max_len:
        raise UserError(f"sequence of length {ids.shape[1]} exceeds the model's limit of {max_len}")


class RecurrentEncoder(nn.Module):
    def __init__(self, vocab_size: int | None, embed_dim: int, hidden: int, num_layers: int = 1, cell: str = "lstm",
                 dropout: float = 0.0, bidirectional: bool = False, input_size: int | None = None,
                 embed_dropout: float = 0.0):
        super().__init__()
        if cell not in RECURRENT:
            raise UserError(f"unknown cell '{cell}'; choose from {', '.join(CELLS)}")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0) if vocab_size else None
        size = embed_dim if vocab_size else (input_size or embed_dim)
        dirs = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            RECURRENT[cell](size if k == 0 else hidden * dirs, hidden, batch_first=True, bidirectional=bidirectional)
            for k in range(num_layers))
        self.cell, self.hidden, self.bidirectional, self.out_dim = cell, hidden, bidirectional, hidden * dirs
        self.drop = nn.Dropout(dropout)
        self.embed_drop = nn.Dropout(embed_dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: list | None = None):
        """x: ids (B, T) or features (B, T, I). Returns (outputs (B, T, D*H), final states per layer)."""
        h = self.embed_drop(self.embedding(x)) if self.embedding is not None else x
        states = []
        for k, layer in enumerate(self.layers):
            h, s = layer(h, None if state is None else state[k], lengths=lengths)
            states.append(s)
            h = self.drop(h)
        return h, states

    def groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups from the input side: [embedding], [layer 0], [layer 1], ..."""
        first = list(self.embedding.parameters()) if self.embedding is not None else []
        return [first] + [list(m.parameters()) for m in self.layers]


def last_hidden(outputs: torch.Tensor, lengths: torch.Tensor | None, bidirectional: bool) -> torch.Tensor:
    """(B, D*H): forward features at each sequence's last real step, backward features at step 0."""
    B, T, _ = outputs.shape
    idx = (lengths.to(outputs.device) - 1) if lengths is not None else torch.full((B,), T - 1, device=outputs.device)
    last = outputs[torch.arange(B, device=outputs.device), idx]
    if not bidirectional:
        return last
    H = outputs.shape[2] // 2
    return torch.cat([last[:, :H], outputs[:, 0, H:]], dim=1)


class SequenceClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 64, hidden: int = 128,
                 num_layers: int = 1, cell: str = "lstm", bidirectional: bool = False, dropout: float = 0.0,
                 pooling: str = "concat", max_len: int = 0, embed_dropout: float = 0.0, head_hidden: int = 0,
                 head_dropout: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"unknown pooling '{pooling}'; choose from {', '.join(POOLINGS)}")
        self.encoder = RecurrentEncoder(vocab_size, embed_dim, hidden, num_layers, cell, dropout, bidirectional,
                                        embed_dropout=embed_dropout)
        d = self.encoder.out_dim
        self.pooling, self.max_len = pooling, max_len
        d_in = 3 * d if pooling == "concat" else d
        if head_hidden:
            self.head = nn.Sequential(nn.LayerNorm(d_in), nn.Dropout(head_dropout), nn.Linear(d_in, head_hidden),
                                      nn.ReLU(), nn.LayerNorm(head_hidden), nn.Dropout(head_dropout),
                                      nn.Linear(head_hidden, num_classes))
        elif head_dropout:
            self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(d_in, num_classes))
        else:
            self.head = nn.Linear(d_in, num_classes)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        _check_len(ids, self.max_len)
        out, _ = self.encoder(ids, lengths)
        if self.pooling == "last":
            return last_hidden(out, lengths, self.encoder.bidirectional)
        if lengths is None:
            mask = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
        else:
            mask = torch.arange(out.shape[1], device=out.device)[None, :] < lengths.to(out.device)[:, None]
        m = mask.unsqueeze(2)
        mean = (out * m).sum(1) / m.sum(1).clamp(min=1)
        if self.pooling == "mean":
            return mean
        mx = out.masked_fill(~m, float("-inf")).max(1).values
        return torch.cat([last_hidden(out, lengths, self.encoder.bidirectional), mx, mean], dim=1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(ids, lengths))

    def groups(self) -> list[list[nn.Parameter]]:
        """Layer groups for discriminative rates / gradual unfreezing: encoder groups, then the head."""
        return self.encoder.groups() + [list(self.head.parameters())]


class CharLM(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden: int = 512, num_layers: int = 2,
                 cell: str = "lstm", dropout: float = 0.1, max_len: int = 0, embed_dropout: float = 0.0):
        super().__init__()
        self.encoder = RecurrentEncoder(vocab_size, embed_dim, hidden, num_layers, cell, dropout,
                                        embed_dropout=embed_dropout)
        self.decoder = nn.Linear(hidden, vocab_size)
        self.max_len = max_len

    def forward(self, ids: torch.Tensor, state: list | None = None, lengths: torch.Tensor | None = None):
        """Logits (B, T, V) of the next token at every position; returns (logits, state)."""
        _check_len(ids, self.max_len)
        out, state = self.encoder(ids, lengths, state)
        return self.decoder(out), state

    @torch.no_grad()
    def sample(self, prompt_ids: list[int], length: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> list[int]:
        """Continue `prompt_ids` by `length` tokens; tau -> 0 is greedy, tau = 1 samples the model."""
        if temperature < 0:
            raise UserError(f"temperature must be >= 0, got {temperature}")
        was_training = self.training
        self.eval()
        device = self.decoder.weight.device
        ids = torch.tensor([prompt_ids or [0]], device=device)
        logits, state = self(ids)
        out = []
        for _ in range(length):
            last = logits[0, -1]
            if temperature == 0:
                nxt = int(last.argmax())
            else:
                probs = torch.softmax(last / temperature, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=generator))
            out.append(nxt)
            logits, state = self(torch.tensor([[nxt]], device=device), state)
        self.train(was_training)
        return out


class SequenceRegressor(nn.Module):
    """Reads a real-valued sequence (B, T, I) and predicts the next value (B, O) from the last state."""

    def __init__(self, input_size: int = 1, hidden: int = 64, num_layers: int = 1, cell: str = "lstm",
                 outputs: int = 1, max_len: int = 0):
        super().__init__()
        self.encoder = RecurrentEncoder(None, input_size, hidden, num_layers, cell, input_size=input_size)
        self.head = nn.Linear(hidden, outputs)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        _check_len(x, self.max_len)
        out, _ = self.encoder(x, lengths)
        return self.head(last_hidden(out, lengths, False))
