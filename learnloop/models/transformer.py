"""Transformer models assembled from `learnloop.nn` blocks (Vaswani et al., 2017):

- `Seq2SeqTransformer`: the encoder-decoder of the paper (fig. 1) with token embeddings scaled by
  sqrt(d_model) (sec. 3.4), positional encodings and a linear output layer; greedy decoding returns the
  cross-attention maps for plotting.
- `TransformerEncoderModel`: encoder-only (BERT-style) per-token outputs, e.g. masked-LM logits or tag scores;
  padding (token `pad_id`) is hidden from attention by the key padding mask. Embeddings start at N(0, 0.02)
  and are not scaled (as in BERT), so a tied output layer starts with small logits.
- `InContextRegressor`: a decoder-only model reading a prompt of (x_1, f(x_1), ..., x_k, f(x_k), x_q) as
  vectors and predicting f at every x position from the earlier pairs only (Garg et al., 2022). Sequence
  element 2i is x_i, element 2i+1 is (f(x_i), 0, ..., 0); the output read at element 2i estimates f(x_i).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learnloop.nn.attention import padding_mask
from learnloop.nn.positional import POSITIONAL
from learnloop.nn.transformer import Transformer, TransformerEncoder, TransformerEncoderLayer


class Seq2SeqTransformer(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 128, nhead: int = 4,
                 num_encoder_layers: int = 2, num_decoder_layers: int = 2, dim_feedforward: int = 512,
                 dropout: float = 0.1, max_len: int = 128, pad_id: int = 0, norm_first: bool = True,
                 positional: str = "sinusoidal", activation: str = "relu"):
        super().__init__()
        self.d_model, self.pad_id = d_model, pad_id
        self.src_emb = nn.Embedding(src_vocab, d_model, padding_idx=pad_id)
        self.tgt_emb = nn.Embedding(tgt_vocab, d_model, padding_idx=pad_id)
        self.pos = POSITIONAL[positional](d_model, max_len=max_len, dropout=dropout)
        self.transformer = Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward,
                                       dropout, activation, batch_first=True, norm_first=norm_first)
        self.out = nn.Linear(d_model, tgt_vocab)
        for emb in (self.src_emb, self.tgt_emb):      # N(0, 1/d) so that sqrt(d) * E has unit scale, like the
            nn.init.normal_(emb.weight, std=d_model ** -0.5)   # positional encodings it is added to
            with torch.no_grad():
                emb.weight[pad_id].zero_()

    def _embed(self, emb: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        return self.pos(emb(ids) * math.sqrt(self.d_model))

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kpm = padding_mask(src, self.pad_id)
        return self.transformer.encoder(self._embed(self.src_emb, src), src_key_padding_mask=kpm), kpm

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src_kpm: torch.Tensor, need_weights: bool = False):
        out = self.transformer.decoder(self._embed(self.tgt_emb, tgt_in), memory, tgt_is_causal=True,
                                       tgt_key_padding_mask=padding_mask(tgt_in, self.pad_id),
                                       memory_key_padding_mask=src_kpm, need_weights=need_weights)
        if need_weights:
            return self.out(out[0]), out[1]
        return self.out(out)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """(B, S) source ids, (B, T) decoder inputs (<bos> y_1 .. y_{T-1}) -> (B, T, tgt_vocab) logits."""
        memory, kpm = self.encode(src)
        return self.decode(tgt_in, memory, kpm)

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, bos_id: int, eos_id: int, max_len: int,
                      need_weights: bool = False):
        """Argmax decoding until every row emitted <eos> (or max_len tokens). Returns (B, T) ids without <bos>
        (and, with need_weights, the last layer's cross-attention (B, T, S) averaged over heads)."""
        was = self.training
        self.eval()
        memory, kpm = self.encode(src)
        ys = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            logits = self.decode(ys, memory, kpm)
            nxt = logits[:, -1].argmax(-1)
            nxt = nxt.masked_fill(done, self.pad_id)
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if done.all():
                break
        self.train(was)
        if need_weights:              # query t of the decoder input produced output t
            maps = self.decode(ys[:, :-1], memory, kpm, need_weights=True)[1]
            return ys[:, 1:], maps[-1]["cross"]
        return ys[:, 1:]


class TransformerEncoderModel(nn.Module):
    def __init__(self, vocab_size: int, num_outputs: int, d_model: int = 128, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 512, dropout: float = 0.1, max_len: int = 128, pad_id: int = 0,
                 positional: str = "learned", norm_first: bool = True, tie_weights: bool = False):
        super().__init__()
        self.pad_id, self.d_model = pad_id, d_model
        self.emb = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos = POSITIONAL[positional](d_model, max_len=max_len, dropout=dropout)
        layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, "gelu", batch_first=True,
                                        norm_first=norm_first)
        self.encoder = TransformerEncoder(layer, num_layers, nn.LayerNorm(d_model) if norm_first else None)
        self.head = nn.Linear(d_model, num_outputs)
        nn.init.normal_(self.emb.weight, std=0.02)          # BERT's initialisation; no sqrt(d) scaling
        if tie_weights:
            if num_outputs != vocab_size:
                raise ValueError("tie_weights needs num_outputs == vocab_size")
            self.head.weight = self.emb.weight

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, d_model) contextual features."""
        h = self.pos(self.emb(ids))
        return self.encoder(h, src_key_padding_mask=padding_mask(ids, self.pad_id))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids))


class InContextRegressor(nn.Module):
    def __init__(self, n_dims: int, max_points: int = 32, d_model: int = 128, nhead: int = 4, num_layers: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.n_dims = n_dims
        self.read_in = nn.Linear(n_dims, d_model)
        self.pos = POSITIONAL["learned"](d_model, max_len=2 * max_points)
        layer = TransformerEncoderLayer(d_model, nhead, 4 * d_model, dropout, "gelu", batch_first=True,
                                        norm_first=True)
        self.blocks = TransformerEncoder(layer, num_layers, nn.LayerNorm(d_model))
        self.read_out = nn.Linear(d_model, 1)

    @staticmethod
    def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """(B, k, d) inputs and (B, k) outputs -> (B, 2k, d): x_1, (y_1, 0..), x_2, (y_2, 0..), ..."""
        B, k, d = xs.shape
        y_vec = torch.zeros_like(xs)
        y_vec[..., 0] = ys
        return torch.stack([xs, y_vec], dim=2).reshape(B, 2 * k, d)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """(B, k) predictions: entry i estimates f(x_i) from (x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i)."""
        h = self.pos(self.read_in(self.interleave(xs, ys)))
        h = self.blocks(h, is_causal=True)
        return self.read_out(h[:, 0::2]).squeeze(-1)
