"""What several sequence recipes share: the `train` section they start from, the recurrent text
classifier (config, single-stage parts, evaluation with a confusion matrix) and its text predictor.

Used by char-rnn-language and rnn-qa (the whole single-stage classifier), ulmfit-classify (evaluation and
predictor) and every recipe of the family (`train_section`, `distinct`, the batch sizes below).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnloop.data.text import Vocab, char_tokens, pad_sequences, word_tokens
from learnloop.engine.learner import Learner
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import UserError
from learnloop.models.sequence import CELLS, POOLINGS, SequenceClassifier
from learnloop.recipes.base import Parts, Predictor, Stage
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.tasks.sequence import SequenceClassification
from learnloop.utils.io import write_json
from learnloop.utils.plots import plot_confusion, plot_curves

EVAL_BATCH = 256          # sequences per evaluation batch (no effect on the results)
MAX_PREDICT_INPUTS = 10_000   # characters of a prompt / values of a number sequence accepted by `predict`


def train_section(help: str, *, epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
                  pct_start: float = 0.25, clip: float = 1.0):
    """A `train` section: AdamW, one-cycle schedule rising over `pct_start`, gradient norm clipped."""
    return section(TrainConfig, help, epochs=epochs, batch_size=batch_size,
                   optim=OptimConfig(lr=lr, weight_decay=weight_decay),
                   schedule=ScheduleConfig(kind="one-cycle", pct_start=pct_start), clip_grad_norm=clip)


def distinct(key: str, values) -> None:
    """UserError naming the first value of `values` listed twice under config key `key`."""
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise UserError(f"{key}: {seen[0]} is listed twice; give distinct values")


def epoch_rows(history: list[dict]) -> list[dict]:
    return [r for r in history if "epoch" in r and "time" in r]


def shown(text: str) -> str:
    """A short one-line quote of a user's input, for error messages."""
    one = text.replace("\n", " ").replace("\r", " ")
    return repr(one[:40] + ("..." if len(one) > 40 else ""))


# --- the recurrent text classifier ------------------------------------------------------------------------
@dataclass
class TextClassifierModelConfig:
    cell: str = param("gru", "recurrent cell", choices=CELLS)
    embed_dim: int = param(32, "token embedding size", min=1)
    hidden: int = param(128, "hidden units per direction", min=1)
    num_layers: int = param(1, "recurrent layers", min=1, max=4)
    bidirectional: bool = param(True, "read the sequence both ways")
    pooling: str = param("concat", "sequence representation", choices=POOLINGS)
    dropout: float = param(0.2, "dropout on recurrent outputs", min=0.0, max=0.9)
    embed_dropout: float = param(0.0, "dropout on the token embeddings", min=0.0, max=0.9)


def text_classifier(m: TextClassifierModelConfig, vocab_size: int, num_classes: int, max_len: int):
    return SequenceClassifier(vocab_size, num_classes, m.embed_dim, m.hidden, m.num_layers, m.cell, m.bidirectional,
                              m.dropout, m.pooling, max_len=max_len, embed_dropout=m.embed_dropout)


class TextClassifierParts(Parts):
    """One trained text classifier, the epoch with the best validation accuracy kept. The config has
    `model` (TextClassifierModelConfig), `data.max_len`, `train` and `label_smoothing`; `info` has the
    `vocab` and the class names under `classes_key`."""

    classes_key = "classes"

    def build(self, cfg, info: dict) -> SequenceClassification:
        n = len(info[self.classes_key])
        model = text_classifier(cfg.model, len(info["vocab"]), n, cfg.data.max_len)
        return SequenceClassification(model, n, cfg.train.optim, label_smoothing=cfg.label_smoothing)

    def stages(self, cfg, info: dict, upstream: dict) -> list[Stage]:
        return [Stage("", lambda trained: self.build(cfg, info), cfg.train, monitor="val_accuracy", mode="max")]


def evaluate_sequence_classifier(task: SequenceClassification, loader, classes: list[str], run, history: list[dict],
                                 prefix: str = "") -> dict:
    """test_* metrics of the task's weights on `loader`, with confusion matrix (PNG + JSON) and curves."""
    metrics = Learner(task).validate(loader, "test")
    cm = task.confusion["test"][: len(classes), : len(classes)]
    tag = f"{prefix}_" if prefix else ""
    plot_confusion(cm, classes, run.plots / f"{tag}confusion_matrix.png")
    write_json(run.path / f"{tag}confusion_matrix.json", {"classes": classes, "matrix": cm.tolist()})
    if epoch_rows(history):
        plot_curves(epoch_rows(history), run.plots / f"{tag}curves.png", title=prefix)
    return {f"{tag}{k}": v for k, v in metrics.items()}


class TextClassPredictor(Predictor):
    """Texts -> class with probabilities, tokenised as in training (characters or words). Texts longer than
    the model's limit are cut to it (`truncate`, as the training texts were) or refused."""

    def __init__(self, task, vocab: Vocab, classes: list[str], *, level: str, max_len: int, truncate: bool,
                 key: str, inputs: str, examples: list[str], top: int = 3):
        self.task, self.vocab, self.classes, self.level = task, vocab, list(classes), level
        self.max_len, self.truncate, self.key, self.inputs = max_len, truncate, key, inputs
        self._examples, self.top = list(examples), top

    def examples(self, folder) -> list[str]:
        return list(self._examples)

    def _encode(self, text) -> tuple[list[int], bool]:
        if not isinstance(text, str) or not text.strip():
            raise UserError("empty input: give a text")
        tokens = char_tokens(text) if self.level == "char" else word_tokens(text)
        if not tokens:
            raise UserError(f"{shown(text)}: no words in it")
        if len(tokens) > self.max_len:
            if not self.truncate:
                unit = "characters" if self.level == "char" else "words"
                raise UserError(f"{shown(text)} has {len(tokens)} {unit}; the model's limit is {self.max_len}")
            return self.vocab.encode(tokens[: self.max_len]), True
        return self.vocab.encode(tokens), False

    @torch.no_grad()
    def __call__(self, raw: list[str]) -> list[dict]:
        encoded = [self._encode(t) for t in raw]
        model = self.task.model
        model.eval()
        probs = []
        for start in range(0, len(encoded), EVAL_BATCH):
            ids, lengths = pad_sequences([e for e, _ in encoded[start:start + EVAL_BATCH]])
            probs.append(torch.softmax(model(ids, lengths), dim=1))
        out = []
        for text, (_, cut), p in zip(raw, encoded, torch.cat(probs)):
            top = torch.topk(p, min(self.top, len(self.classes)))
            row = {"input": text, self.key: self.classes[int(top.indices[0])],
                   "probability": round(float(top.values[0]), 4),
                   "top": [{self.key: self.classes[int(i)], "probability": round(float(v), 4)}
                           for v, i in zip(top.values, top.indices)]}
            if cut:
                row["truncated_to"] = self.max_len
            out.append(row)
        return out
