"""gpt-char: a character-level GPT (decoder-only Transformer; Radford et al., 2018, "Improving Language
Understanding by Generative Pre-Training") on the fortunes corpus, sampled with temperature, top-k and top-p
(nucleus; Holtzman et al., 2020) decoding through a KV cache. With `compare_lstm` it also trains the LSTM
char-LM (stage "lstm") on the same split and token budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from learnloop.data.text import LMWindowLoader, Vocab, char_vocab, fortunes_lm_corpus
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.models.gpt import GPT, generate_text
from learnloop.models.sequence import CharLM
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.sequence.char_lm import LMModelConfig
from learnloop.recipes.transformer.common import (
    adamw_cosine,
    best_value,
    check_chars,
    epochs_trained,
    info_tokens,
    input_texts,
    stage_curves,
)
from learnloop.tasks.token_prediction import TokenPrediction
from learnloop.utils.io import write_text


@dataclass
class FortunesLMData:
    """The fortunes corpus as one text, split into whole fortunes (the split every LM recipe shares)."""

    path: str = param("", "folder of fortune files (default: /usr/share/games/fortunes)")
    val_fraction: float = param(0.1, "fraction of the fortunes held out for validation", min=0.01, max=0.5)
    split_seed: int = param(0, "seed of the train/validation split (the LSTM char-lm uses 0 too)", min=0)
    min_freq: int = param(5, "characters seen fewer times than this read as <unk>", min=1)


@dataclass
class GPTPart:
    d_model: int = param(128, "model width", min=8)
    n_heads: int = param(4, "attention heads", min=1)
    n_layers: int = param(4, "decoder blocks", min=1, max=24)
    dropout: float = param(0.1, "dropout", min=0.0, max=0.9)
    positional: str = param("learned", "positional encoding", choices=("learned", "sinusoidal"))
    tie_weights: bool = param(True, "share the token embedding with the output layer")
    train: TrainConfig = adamw_cosine("training of the GPT (stage 'gpt')", epochs=4, batch_size=64, lr=2e-3,
                                      weight_decay=0.1, betas=(0.9, 0.95))


@dataclass
class MatchedTrainConfig(TrainConfig):
    """A `train` section whose budget defaults to another part's (0: the same as gpt.train)."""

    epochs: int = param(0, "epochs (0: gpt.train.epochs, the equal-budget comparison)", min=0, max=100_000)
    batch_size: int = param(0, "windows per batch (0: gpt.train.batch_size)", min=0, max=1_000_000)


@dataclass
class LSTMPart(LMModelConfig):
    """The recurrent char-LM of learnloop.models.sequence (the `char-lm` recipe's model and defaults)."""

    train: MatchedTrainConfig = section(MatchedTrainConfig, "training of the LSTM (stage 'lstm')",
                                        clip_grad_norm=1.0, optim=OptimConfig(name="adamw", lr=1e-2, weight_decay=0.01),
                                        schedule=ScheduleConfig(kind="one-cycle"))


SAMPLE_SETTINGS = ("temperature", "top-k", "top-p", "greedy")


@dataclass
class GPTSampleConfig:
    chars: int = param(400, "characters generated per sample written after training (0: none)", min=0,
                       max=100_000)
    prompt: str = param("The ", "prompt of those samples")
    temperature: float = param(0.8, "temperature of the 'temperature' sample", min=0.01, max=100.0)
    top_k: int = param(10, "k of the 'top-k' sample (temperature 1)", min=1)
    top_p: float = param(0.9, "p of the 'top-p' (nucleus) sample (temperature 1)", min=0.01, max=1.0)
    predict: str = param("top-p", "which of these settings `learnloop predict` samples with",
                         choices=SAMPLE_SETTINGS)
    predict_chars: int = param(200, "characters `learnloop predict` generates per prompt", min=1, max=100_000)


@dataclass
class GPTCharConfig:
    data: FortunesLMData = section(FortunesLMData, "data")
    seq_len: int = param(128, "training window = the GPT's context length (both models)", min=8)
    batches_per_epoch: int = param(100, "random-window batches per epoch (token budget = epochs x batches x "
                                   "batch_size x seq_len)", min=1)
    val_batches: int = param(20, "validation batches (0: the whole validation text)", min=0)
    val_batch_size: int = param(128, "windows per validation batch", min=1)
    gpt: GPTPart = section(GPTPart, "the GPT")
    compare_lstm: bool = param(False, "also train the LSTM char-LM (stage 'lstm') on the same split and budget")
    lstm: LSTMPart = section(LSTMPart, "the LSTM of compare_lstm")
    sample: GPTSampleConfig = section(GPTSampleConfig, "sampling")

    MOVED = {"epochs": "gpt.train.epochs", "lr": "gpt.train.optim.lr", "batch_size": "gpt.train.batch_size",
             "weight_decay": "gpt.train.optim.weight_decay", "schedule": "gpt.train.schedule.kind",
             "warmup": "gpt.train.schedule.warmup", "clip_grad_norm": "gpt.train.clip_grad_norm",
             "dropout": "gpt.dropout", "d_model": "gpt.d_model", "n_heads": "gpt.n_heads",
             "n_layers": "gpt.n_layers", "positional": "gpt.positional", "tie_weights": "gpt.tie_weights",
             "sample_chars": "sample.chars", "prompt": "sample.prompt", "data_path": "data.path"}


def _lstm_train(cfg: GPTCharConfig) -> MatchedTrainConfig:
    t = cfg.lstm.train
    return replace(t, epochs=t.epochs or cfg.gpt.train.epochs, batch_size=t.batch_size or cfg.gpt.train.batch_size)


def gpt_char_data(cfg: GPTCharConfig):
    """The shared fortunes LM split and the char-lm vocabulary (characters seen >= min_freq times, else <unk>)."""
    d = cfg.data
    train, val = fortunes_lm_corpus(d.val_fraction, d.split_seed, d.path or None)
    return train, val, char_vocab([train], min_freq=d.min_freq)


def _sampling(s: GPTSampleConfig, setting: str) -> tuple[dict, str]:
    """generate_text's keyword arguments for one of SAMPLE_SETTINGS, and its label."""
    return {"temperature": ({"temperature": s.temperature}, f"temperature {s.temperature:g}"),
            "top-k": ({"top_k": s.top_k}, f"top-k {s.top_k}"),
            "top-p": ({"top_p": s.top_p}, f"top-p {s.top_p:g}"),
            "greedy": ({"greedy": True}, "greedy")}[setting]


class TextPredictor(Predictor):
    inputs = "prompts (text the GPT continues; characters must occur in the fortunes)"

    def __init__(self, run):
        self.run, self.s = run, run.cfg.sample
        self.model, self.vocab = run.tasks["gpt"].model, Vocab(info_tokens(run.info, "vocab"))

    def examples(self, folder) -> list[str]:
        candidates = [self.s.prompt, "Q: What", "A computer"]
        known = [p for p in candidates if p.strip() and all(c in self.vocab.index for c in p)]
        return known or [self.vocab.tokens[4]]

    def __call__(self, raw: list[str]) -> list[dict]:
        prompts = input_texts(raw, "a prompt such as 'The '")
        g = torch.Generator().manual_seed(self.run.seed)
        kw, label = _sampling(self.s, self.s.predict)
        out = []
        for p in prompts:
            check_chars(p, self.vocab.index, "not in the vocabulary")
            text = generate_text(self.model, self.vocab, p, self.s.predict_chars, generator=g, **kw)
            out.append({"prompt": p, "text": text, "sampling": label})
        return out


@recipe("gpt-char", "character-level GPT (decoder-only Transformer, KV cache, top-k/top-p sampling) on fortunes",
        GPTCharConfig, target="val_loss_nats_per_char reported; compared with char-lm (LSTM)",
        main_metric="val_loss_nats_per_char",
        smoke={"gpt.d_model": 16, "gpt.n_layers": 1, "seq_len": 16, "gpt.train.batch_size": 8,
               "batches_per_epoch": 3, "gpt.train.epochs": 1, "val_batches": 2, "val_batch_size": 8,
               "sample.chars": 20, "sample.predict_chars": 10, "compare_lstm": True, "lstm.hidden": 16,
               "lstm.num_layers": 1, "lstm.embed_dim": 8})
class CharGPT(Parts):
    def data(self, cfg: GPTCharConfig, seed: int) -> Bundle:
        train, val, vocab = gpt_char_data(cfg)
        tr_ids, va_ids = torch.tensor(vocab.encode(list(train))), torch.tensor(vocab.encode(list(val)))
        loader = LMWindowLoader(tr_ids, cfg.seq_len, cfg.gpt.train.batch_size, cfg.batches_per_epoch, seed=seed)
        val_loader = LMWindowLoader(va_ids, cfg.seq_len, cfg.val_batch_size, cfg.val_batches or None, shuffle=False)
        extra = {"sizes": (len(train), len(val))}
        if cfg.compare_lstm:            # the same windows (same seed), at the LSTM's batch size
            extra["lstm_train"] = LMWindowLoader(tr_ids, cfg.seq_len, _lstm_train(cfg).batch_size,
                                                 cfg.batches_per_epoch, seed=seed)
        return Bundle(loader, val_loader, None, info={"vocab": vocab.tokens}, extra=extra)

    def stages(self, cfg: GPTCharConfig, info: dict, upstream: dict) -> list[Stage]:
        V = len(info_tokens(info, "vocab"))
        g = cfg.gpt

        def build_gpt(trained):
            model = GPT(V, cfg.seq_len, g.d_model, g.n_heads, g.n_layers, dropout=g.dropout,
                        tie_weights=g.tie_weights, positional=g.positional)
            return TokenPrediction(model, g.train.optim)

        stages = [Stage("gpt", build_gpt, g.train)]
        if cfg.compare_lstm:
            lstm, train = cfg.lstm, _lstm_train(cfg)

            def build_lstm(trained):
                model = CharLM(V, lstm.embed_dim, lstm.hidden, lstm.num_layers, lstm.cell, lstm.dropout)
                return TokenPrediction(model, train.optim)

            stages.append(Stage("lstm", build_lstm, train, loaders=lambda b: (b.extra["lstm_train"], b.val)))
        return stages

    def evaluate(self, cfg: GPTCharConfig, run, data: Bundle) -> dict:
        n_train, n_val = data.extra["sizes"]
        vocab = Vocab(info_tokens(run.info, "vocab"))
        run.say(f"fortunes LM: {n_train:,} train / {n_val:,} validation characters, vocabulary {len(vocab)}")
        metrics = self._lm_metrics(run, "gpt", cfg.gpt.train.batch_size, cfg, "")
        stage_curves(run, "gpt", "gpt", "gpt-char")
        model = run.tasks["gpt"].model
        if cfg.sample.chars:
            g = torch.Generator().manual_seed(run.seed)
            parts = []
            for setting in ("temperature", "top-k", "top-p"):
                kw, label = _sampling(cfg.sample, setting)
                text = generate_text(model, vocab, cfg.sample.prompt, cfg.sample.chars, generator=g, **kw)
                parts.append(f"=== {label} ===\n{text}\n")
            write_text(run.samples / "samples.txt", "\n".join(parts))
            run.say(parts[0])
        if cfg.compare_lstm:
            metrics.update(self._lm_metrics(run, "lstm", _lstm_train(cfg).batch_size, cfg, "lstm_"))
            stage_curves(run, "lstm", "lstm_lm", "character LM (LSTM)")
            run.say(f"GPT {metrics['val_loss_nats_per_char']:.4f} vs LSTM "
                    f"{metrics['lstm_val_loss_nats_per_char']:.4f} nats/char at the same token budget")
        run.say(f"validation loss {metrics['val_loss_nats_per_char']:.4f} nats/char")
        return metrics

    @staticmethod
    def _lm_metrics(run, stage: str, batch_size: int, cfg: GPTCharConfig, prefix: str) -> dict:
        history = run.history(stage)
        best = best_value(history, "val_loss")
        model = run.tasks[stage].model
        chars_per_epoch = cfg.batches_per_epoch * batch_size * cfg.seq_len
        return {f"{prefix}val_loss_nats_per_char": best,
                f"{prefix}val_bpc": best / math.log(2) if best is not None else None,
                f"{prefix}train_chars_seen": epochs_trained(history) * chars_per_epoch,
                f"{prefix}parameters": sum(p.numel() for p in model.parameters())}

    def predictor(self, run) -> Predictor:
        return TextPredictor(run)

