"""seq2seq-dates: an encoder-decoder Transformer (Vaswani et al., 2017, "Attention Is All You Need") that
translates dates as people write them (20 formats, generated from the run's seed) into ISO 8601, character
by character, decoded greedily; its decoder cross-attention is plotted for a few test dates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import torch

from learnloop.data.collators import IGNORE
from learnloop.data.dates import make_dates
from learnloop.data.loader import TensorLoader
from learnloop.data.text import Vocab, char_vocab, pad_sequences
from learnloop.models.transformer import Seq2SeqTransformer
from learnloop.recipes.base import Bundle, Parts, Predictor, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.transformer.common import (
    adamw_cosine,
    best_value,
    check_chars,
    check_length,
    epochs_trained,
    info_tokens,
    input_texts,
    stage_curves,
)
from learnloop.tasks.token_prediction import TokenPrediction
from learnloop.utils.attention_plot import plot_attention
from learnloop.utils.io import write_text


@dataclass
class DatesDataConfig:
    """Generated data: (human-written date, ISO date) pairs drawn from the run's seed."""

    n_train: int = param(20000, "generated training pairs", min=100)
    n_val: int = param(1000, "validation pairs", min=50)
    n_test: int = param(2000, "test pairs (exact match is measured here)", min=50)


@dataclass
class DatesModelConfig:
    d_model: int = param(128, "model width", min=8)
    nhead: int = param(4, "attention heads", min=1)
    layers: int = param(2, "encoder layers = decoder layers", min=1, max=8)
    dim_feedforward: int = param(256, "feed-forward width", min=8)
    dropout: float = param(0.1, "dropout", min=0.0, max=0.9)
    norm_first: bool = param(True, "pre-norm layers (False: the paper's post-norm)")
    max_len: int = param(64, "longest source text in characters (positional encoding length)", min=16, max=4096)


@dataclass
class DatesConfig:
    data: DatesDataConfig = section(DatesDataConfig, "data")
    model: DatesModelConfig = section(DatesModelConfig, "model")
    train: TrainConfig = adamw_cosine("training", epochs=10, batch_size=128, lr=1e-3)
    label_smoothing: float = param(0.0, "label smoothing", min=0.0, max=0.5)
    eval_batch_size: int = param(512, "batch size of validation and of translating the test dates", min=1)
    samples: int = param(30, "test translations listed in samples/translations.txt", min=0)
    errors_listed: int = param(200, "wrong test translations listed there", min=0)
    plot_examples: int = param(4, "test examples whose cross-attention is plotted", min=0, max=16)


ISO_CHARS = "0123456789-"
MAX_DECODE = len("yyyy-mm-dd") + 3          # ten ISO characters, <eos>, slack


def _encode_pairs(pairs, src_vocab: Vocab, tgt_vocab: Vocab):
    src = pad_sequences([src_vocab.encode(list(s)) for s, _ in pairs])[0]
    tgt = [[tgt_vocab.bos_id, *tgt_vocab.encode(list(t)), tgt_vocab.eos_id] for _, t in pairs]
    full = pad_sequences(tgt)[0]
    tgt_in, tgt_out = full[:, :-1], full[:, 1:].clone()
    tgt_out[tgt_out == tgt_vocab.pad_id] = IGNORE
    return src, tgt_in, tgt_out


def translate_dates(model: Seq2SeqTransformer, src_vocab: Vocab, tgt_vocab: Vocab, texts: list[str],
                    batch_size: int = 512, strict: bool = True) -> list[str]:
    """ISO strings for human-written dates; with `strict`, characters never seen in training are a UserError
    (otherwise they read as <unk>)."""
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        src = pad_sequences([src_vocab.encode(list(t), strict=strict) for t in chunk])[0]
        ids = model.greedy_decode(src, tgt_vocab.bos_id, tgt_vocab.eos_id, max_len=MAX_DECODE)
        for row in ids.tolist():
            row = row[:row.index(tgt_vocab.eos_id)] if tgt_vocab.eos_id in row else row
            out.append("".join(tgt_vocab.decode(row)))
    return out


def _date_splits(cfg: DatesConfig, seed: int):
    d = cfg.data
    return make_dates(d.n_train, seed=seed * 3 + 1), make_dates(d.n_val, seed=seed * 3 + 2), \
        make_dates(d.n_test, seed=seed * 3 + 3)


def _vocabs(info: dict) -> tuple[Vocab, Vocab]:
    """The source (characters) and target (ISO characters) vocabularies of a run."""
    return Vocab(info_tokens(info, "src_vocab")), Vocab(info_tokens(info, "tgt_vocab"))


def _is_date(iso: str) -> bool:
    try:
        dt.date.fromisoformat(iso)
    except ValueError:
        return False
    return len(iso) == 10


class DatePredictor(Predictor):
    inputs = "dates as people write them, in English (e.g. 'March 3, 1999', '3rd of may 1999', '03.05.1999')"

    def __init__(self, run):
        self.run, self.cfg = run, run.cfg
        self.model = run.task.model
        self.src, self.tgt = _vocabs(run.info)

    def examples(self, folder) -> list[str]:
        return [s for s, _ in make_dates(3, seed=self.run.seed * 3 + 1)]     # the run's first training dates

    def __call__(self, raw: list[str]) -> list[dict]:
        texts = input_texts(raw, "a date such as 'March 3, 1999'")
        limit = self.cfg.model.max_len
        for text in texts:
            check_length(text, len(text), "characters", limit)
            check_chars(text, self.src.index, "never seen in training")
        self.model.eval()
        iso = translate_dates(self.model, self.src, self.tgt, texts, self.cfg.eval_batch_size)
        return [{"input": t, "iso": p, "valid_date": _is_date(p)} for t, p in zip(texts, iso)]


@recipe("seq2seq-dates", "encoder-decoder Transformer translating human-written dates (20 formats) to ISO 8601",
        DatesConfig, target="test_exact_match >= 0.98", main_metric="test_exact_match",
        smoke={"data.n_train": 200, "data.n_val": 50, "data.n_test": 50, "train.epochs": 1, "model.d_model": 32,
               "model.dim_feedforward": 32, "model.layers": 1, "train.batch_size": 64, "plot_examples": 1})
class DateTranslation(Parts):
    def data(self, cfg: DatesConfig, seed: int) -> Bundle:
        train, val, test = _date_splits(cfg, seed)
        src_vocab = char_vocab([s for s, _ in train])
        tgt_vocab = Vocab.build([list(ISO_CHARS)])
        tr, va = _encode_pairs(train, src_vocab, tgt_vocab), _encode_pairs(val, src_vocab, tgt_vocab)
        return Bundle(TensorLoader(tr, cfg.train.batch_size, shuffle=True, seed=seed),
                      TensorLoader(va, cfg.eval_batch_size), None,
                      info={"src_vocab": src_vocab.tokens, "tgt_vocab": tgt_vocab.tokens},
                      extra={"sizes": (len(train), len(val), len(test)), "test": test})

    def build(self, cfg: DatesConfig, info: dict) -> TokenPrediction:
        m = cfg.model
        src_vocab, tgt_vocab = _vocabs(info)
        model = Seq2SeqTransformer(len(src_vocab), len(tgt_vocab), m.d_model, m.nhead, m.layers, m.layers,
                                   m.dim_feedforward, m.dropout, max_len=m.max_len, norm_first=m.norm_first)
        return TokenPrediction(model, cfg.train.optim, label_smoothing=cfg.label_smoothing)

    def evaluate(self, cfg: DatesConfig, run, data: Bundle) -> dict:
        n_train, n_val, n_test = data.extra["sizes"]
        src_vocab, tgt_vocab = _vocabs(run.info)
        run.say(f"dates: {n_train} train / {n_val} val / {n_test} test pairs, source vocabulary {len(src_vocab)}")
        model = run.task.model
        model.eval()
        stage_curves(run, "", "seq2seq", "seq2seq-dates")
        test = data.extra["test"]
        texts = [s for s, _ in test]
        pred = translate_dates(model, src_vocab, tgt_vocab, texts, cfg.eval_batch_size, strict=False)
        exact = sum(p == t for p, (_, t) in zip(pred, test)) / len(test)
        char_acc = sum(sum(a == b for a, b in zip(p, t)) / len(t) for p, (_, t) in zip(pred, test)) / len(test)
        errors = [f"{s!r} -> {p} (expected {t})" for p, (s, t) in zip(pred, test) if p != t]
        lines = [f"{s!r} -> {p}" for s, p in zip(texts[:cfg.samples], pred[:cfg.samples])]
        write_text(run.samples / "translations.txt",
                   "\n".join(lines) + "\n\nerrors:\n" + "\n".join(errors[:cfg.errors_listed]) + "\n")
        if cfg.plot_examples:
            self._plot_attention(model, src_vocab, tgt_vocab, texts[:cfg.plot_examples], pred, run)
        run.say(f"test exact match {exact:.4f}, character accuracy {char_acc:.4f}")
        history = run.history("")
        return {"test_exact_match": exact, "test_char_accuracy": char_acc,
                "val_loss": best_value(history, "val_loss"), "epochs_trained": epochs_trained(history)}

    @staticmethod
    def _plot_attention(model, src_vocab, tgt_vocab, texts, pred, run) -> None:
        src = pad_sequences([src_vocab.encode(list(t)) for t in texts])[0]
        _out, cross = model.greedy_decode(src, tgt_vocab.bos_id, tgt_vocab.eos_id, MAX_DECODE, need_weights=True)
        panels, qs, ks = [], [], []
        n_out = len("yyyy-mm-dd") + 1
        for i, text in enumerate(texts):
            n_src = len(text)
            rows = cross[i, :n_out, :n_src]
            panels.append(torch.nn.functional.pad(rows, (0, src.shape[1] - n_src, 0, n_out - rows.shape[0])))
            qs.append(list(pred[i][:n_out].ljust(n_out)))
            ks.append(list(text) + [""] * (src.shape[1] - n_src))
        plot_attention(torch.stack(panels), run.plots / "attention_maps.png", qs, ks,
                       title="decoder cross-attention (last layer, mean over heads)", titles=list(texts), cols=2)

    def predictor(self, run) -> Predictor:
        return DatePredictor(run)

