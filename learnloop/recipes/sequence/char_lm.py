"""char-lm: a character-level LSTM language model of the fortunes (Debian's `fortunes` package), trained
with truncated backpropagation through time on random windows, sampled at several temperatures
(p_i proportional to exp(z_i / tau); tau = 0 is greedy), as in Graves (2013) and Karpathy's char-rnn.

The fortunes LM code lives here: how an LM reads the text (`LMWindowsConfig`, `lm_loaders`), its model
and task, its metrics (nats and bits per character of the best epoch) and samples. ulmfit-classify trains
the same LM as its stage 'lm' or consumes a finished char-lm run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from learnloop.data.text import LMWindowLoader, Vocab, char_vocab, fortunes_documents
from learnloop.engine.optim import OptimConfig
from learnloop.errors import UserError
from learnloop.models.sequence import CELLS, CharLM
from learnloop.recipes.base import Bundle, Parts, Predictor, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.sequence.common import MAX_PREDICT_INPUTS, epoch_rows, train_section
from learnloop.tasks.token_prediction import TokenPrediction
from learnloop.utils.io import write_text
from learnloop.utils.plots import plot_curves


@dataclass
class LMWindowsConfig:
    """How a character LM reads the fortunes text (char-lm's `data`, ulmfit-classify's `lm.data`)."""

    seq_len: int = param(100, "training window (truncated BPTT length)", min=8)
    batches_per_epoch: int = param(100, "batches of random windows per epoch (default: 6 x 100 x 64 windows of "
                                   "100 chars, ~1.7 passes over the 2.3M-char text)", min=1)
    val_batches: int = param(8, "validation batches (0: the whole validation text)", min=0)
    val_batch_size: int = param(128, "windows per validation batch", min=1)
    min_freq: int = param(5, "characters seen fewer times in the training text become <unk>", min=1)


@dataclass
class CharLMDataConfig(LMWindowsConfig):
    path: str = param("", "folder of fortune files (default: /usr/share/games/fortunes)")
    val_fraction: float = param(0.1, "fraction of the fortunes (whole ones) held out for validation; 0.1 with "
                                "split_seed 0 is the split every fortunes LM recipe shares", min=0.01, max=0.5)
    split_seed: int = param(0, "seed of the train/validation split of the fortunes", min=0)


@dataclass
class LMModelConfig:
    cell: str = param("lstm", "recurrent cell", choices=CELLS)
    embed_dim: int = param(32, "character embedding size", min=1)
    hidden: int = param(256, "hidden units", min=1)
    num_layers: int = param(2, "recurrent layers", min=1, max=4)
    dropout: float = param(0.1, "dropout on recurrent outputs", min=0.0, max=0.9)


@dataclass
class LMSampleConfig:
    chars: int = param(400, "characters sampled per temperature after training (0: no samples)", min=0)
    temperatures: tuple[float, ...] = param((0.5, 0.8, 1.0), "sampling temperatures (0: greedy)", min=0.0)
    prompt: str = param("The ", "sampling prompt")


@dataclass
class GenerateConfig:
    chars: int = param(200, "characters `predict` generates after each prompt", min=1, max=MAX_PREDICT_INPUTS)
    temperature: float = param(0.8, "sampling temperature of `predict` (0: greedy)", min=0.0)


def lm_train(help: str = "training (AdamW, one-cycle; the best validation loss is kept)"):
    return train_section(help, epochs=6, batch_size=64, lr=1e-2, weight_decay=0.01)


@dataclass
class CharLMConfig:
    data: CharLMDataConfig = section(CharLMDataConfig, "data: the fortunes, read in windows")
    model: LMModelConfig = section(LMModelConfig, "model")
    train: TrainConfig = lm_train()
    sample: LMSampleConfig = section(LMSampleConfig, "samples written after training")
    predict: GenerateConfig = section(GenerateConfig, "generation by `learnloop predict`")

    MOVED = {"sample_chars": "sample.chars"}


def lm_text(docs: list[tuple[str, str]]) -> str:
    """Fortunes joined into one LM text by blank lines (as `learnloop.data.text.fortunes_lm_corpus` does)."""
    return "\n\n".join(e for _, e in docs) + "\n"


def lm_loaders(train_text: str, val_text: str, vocab: Vocab, windows: LMWindowsConfig, batch_size: int, seed: int):
    """(train, val) window loaders: random training windows per epoch, consecutive validation windows."""
    tr_ids = torch.from_numpy(np.asarray(vocab.encode(list(train_text)), dtype=np.int64))
    va_ids = torch.from_numpy(np.asarray(vocab.encode(list(val_text)), dtype=np.int64))
    return (LMWindowLoader(tr_ids, windows.seq_len, batch_size, windows.batches_per_epoch, seed=seed),
            LMWindowLoader(va_ids, windows.seq_len, windows.val_batch_size, windows.val_batches or None,
                           shuffle=False))


def lm_task(m: LMModelConfig, optim: OptimConfig, vocab_size: int) -> TokenPrediction:
    return TokenPrediction(CharLM(vocab_size, m.embed_dim, m.hidden, m.num_layers, m.cell, m.dropout), optim)


def lm_metrics(history: list[dict], batch_size: int, seq_len: int, prefix: str = "") -> dict:
    """val_loss_nats_per_char (the best epoch's, the weights kept), val_bpc and train_chars_seen."""
    rows = [r for r in epoch_rows(history) if "val_loss" in r]
    if not rows:
        return {}
    best = min(r["val_loss"] for r in rows)
    metrics = {"val_loss_nats_per_char": best, "val_bpc": best / math.log(2),
               "train_chars_seen": max(r["step"] for r in rows) * batch_size * seq_len}
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def write_lm_samples(model: CharLM, vocab: Vocab, sample: LMSampleConfig, seed: int, path) -> str:
    """`sample.chars` characters after `sample.prompt` per temperature, to `path`; returns the middle one."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for tau in sample.temperatures:
        out = model.sample(vocab.encode(list(sample.prompt)), sample.chars, tau, g)
        parts.append(f"=== temperature {tau} ===\n{sample.prompt}{''.join(vocab.decode(out))}\n")
    write_text(path, "\n".join(parts))
    return parts[min(1, len(parts) - 1)] if parts else ""


def report_lm(run, stage: str, cfg, windows: LMWindowsConfig, vocab: Vocab, prefix: str = "") -> dict:
    """Metrics, curves and samples of a trained char LM stage (`cfg` has `train` and `sample` sections)."""
    history = run.history(stage)
    metrics = lm_metrics(history, cfg.train.batch_size, windows.seq_len, prefix)
    if epoch_rows(history):
        plot_curves(epoch_rows(history), run.plots / f"{prefix}lm_curves.png", title="character LM")
    if cfg.sample.chars and cfg.sample.temperatures:
        shown = write_lm_samples(run.tasks[stage].model, vocab, cfg.sample, run.seed,
                                 run.samples / f"{prefix}samples.txt")
        run.say(shown)
    return metrics


class PromptPredictor(Predictor):
    """Prompts -> generated continuations (`predict.chars` characters at `predict.temperature`). Each prompt
    gets a generator seeded by the run's seed, so the same prompt always gives the same text."""

    inputs = "prompts: text for the language model to continue"

    def __init__(self, model: CharLM, vocab: Vocab, generate: GenerateConfig, seed: int):
        self.model, self.vocab, self.generate, self.seed = model, vocab, generate, seed

    def examples(self, folder) -> list[str]:
        return ["The ", "Q: What is a computer?\nA:"]

    def __call__(self, raw: list[str]) -> list[dict]:
        out = []
        for prompt in raw:
            if not isinstance(prompt, str) or not prompt:
                raise UserError("empty prompt: give text for the model to continue")
            if len(prompt) > MAX_PREDICT_INPUTS:
                raise UserError(f"prompt of {len(prompt)} characters; at most {MAX_PREDICT_INPUTS} are accepted")
            ids = self.vocab.encode(list(prompt))
            g = torch.Generator().manual_seed(self.seed)
            new = self.model.sample(ids, self.generate.chars, self.generate.temperature, g)
            out.append({"input": prompt, "continuation": "".join(self.vocab.decode(new)),
                        "temperature": self.generate.temperature,
                        "unknown_characters": sum(i == self.vocab.unk_id for i in ids)})
        return out


@recipe("char-lm", "character-level LSTM language model on the fortunes corpus, with temperature sampling",
        CharLMConfig, target="val_loss_nats_per_char reported (lower is better)", main_metric="val_loss_nats_per_char",
        smoke={"train.epochs": 1, "train.batch_size": 4, "data.seq_len": 16, "data.batches_per_epoch": 3,
               "data.val_batches": 1, "data.val_batch_size": 8, "model.hidden": 16, "model.num_layers": 1,
               "model.embed_dim": 8, "sample.chars": 10, "predict.chars": 10})
class CharLanguageModel(Parts):
    def data(self, cfg: CharLMConfig, seed: int) -> Bundle:
        d = cfg.data
        train_docs, val_docs = fortunes_documents(d.val_fraction, d.split_seed, d.path or None)
        train, val = lm_text(train_docs), lm_text(val_docs)
        vocab = char_vocab([train], min_freq=cfg.data.min_freq)
        tr, va = lm_loaders(train, val, vocab, cfg.data, cfg.train.batch_size, seed)
        return Bundle(tr, va, info={"vocab": vocab.tokens, "train_chars": len(train), "val_chars": len(val)})

    def build(self, cfg: CharLMConfig, info: dict) -> TokenPrediction:
        return lm_task(cfg.model, cfg.train.optim, len(info["vocab"]))

    def evaluate(self, cfg: CharLMConfig, run, data: Bundle) -> dict:
        run.say(f"fortunes LM: {run.info['train_chars']:,} train / {run.info['val_chars']:,} validation characters, "
                f"vocabulary {len(run.info['vocab'])}")
        metrics = report_lm(run, "", cfg, cfg.data, Vocab(run.info["vocab"]))
        if metrics:
            run.say(f"validation loss {metrics['val_loss_nats_per_char']:.4f} nats/char")
        return metrics

    def predictor(self, run) -> Predictor:
        return PromptPredictor(run.model, Vocab(run.info["vocab"]), run.cfg.predict, run.seed)
