"""Recipes with recurrent networks (issue B): language identification, next-number prediction, FAQ
question answering, a character language model and its ULMFiT fine-tuning, vanishing gradients through time.

All data is offline: the language excerpts ship with music21, the fortunes with Debian's `fortunes`
package, the FAQ with learnloop (learnloop/assets/faq.csv), and the number sequences are generated from the seed.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from learnloop.data import stratified_split
from learnloop.data.loader import TensorLoader
from learnloop.data.text import (
    LANGUAGE_NAMES,
    BucketLoader,
    LMWindowLoader,
    Vocab,
    char_vocab,
    encode_texts,
    fortunes_documents,
    load_language_excerpts,
    read_text,
    word_tokens,
    word_vocab,
)
from learnloop.engine.checkpoint import load_state
from learnloop.engine.schedules import KINDS, ScheduleConfig
from learnloop.errors import CorruptFileError, UserError
from learnloop.metrics.classification import predictions
from learnloop.models.sequence import CELLS, POOLINGS, CharLM, SequenceClassifier, SequenceRegressor
from learnloop.recipes.base import RunContext, recipe
from learnloop.recipes.config import from_dict, param
from learnloop.tasks.sequence import SequenceClassification, SequenceRegression
from learnloop.tasks.token_prediction import TokenPrediction
from learnloop.utils.io import read_json, write_json, write_text
from learnloop.utils.plots import plot_bars, plot_confusion, plot_curves, plot_lines

ASSETS = Path(__file__).resolve().parent.parent / "assets"


# --- shared: train a sequence classifier on encoded texts -------------------------------------------------
def _fit_classifier(ctx: RunContext, model, num_classes: int, train, val, *, epochs: int, lr: float, name: str = "",
                    weight_decay: float = 0.0, schedule: str = "one-cycle", clip: float = 1.0,
                    discriminative_decay: float = 0.0, gradual_unfreeze: bool = False,
                    label_smoothing: float = 0.0, warmup: float = 0.25):
    task = SequenceClassification(model, num_classes, "adamw", lr, weight_decay, discriminative_decay,
                                  gradual_unfreeze, label_smoothing)
    learner = ctx.learner(task, train, val, epochs=epochs, name=name,
                          schedule=ScheduleConfig(kind=schedule, pct_start=warmup),
                          clip_grad_norm=clip, monitor="val_accuracy", mode="max")
    ctx.fit(learner)
    best = learner.checkpoint_path("best")
    if best is not None and best.exists():
        model.load_state_dict(load_state(best)["modules"]["model"])
    return learner


def _evaluate(learner, loader, classes: list[str], ctx: RunContext, prefix: str = "") -> dict:
    metrics = learner.validate(loader, "test")
    cm = learner.task.confusion["test"][: len(classes), : len(classes)]
    tag = f"{prefix}_" if prefix else ""
    plot_confusion(cm, classes, ctx.run.plots / f"{tag}confusion_matrix.png")
    write_json(ctx.run.path / f"{tag}confusion_matrix.json", {"classes": classes, "matrix": cm.tolist()})
    if learner.history:
        plot_curves(learner.history, ctx.run.plots / f"{tag}curves.png", title=prefix)
    return {f"{tag}{k}": v for k, v in metrics.items()}


def _split3(labels: torch.Tensor, val: float, test: float, seed: int):
    rest, test_idx = stratified_split(labels, test, seed=seed + 1)
    tr, va = stratified_split(labels[rest], val / (1 - test), seed=seed)
    return rest[tr], rest[va], test_idx


# --- char-rnn-language ---------------------------------------------------------------------------------------
@dataclass
class LanguageConfig:
    data_path: str = param("", "folder of <language>.txt files (default: music21's language excerpts)")
    min_chars: int = param(20, "ignore lines shorter than this", min=1)
    per_language: int = param(1500, "at most this many lines per language (0: all)", min=0)
    max_len: int = param(160, "truncate training lines to this many characters (the model's limit)", min=8)
    cell: str = param("gru", "recurrent cell", choices=CELLS)
    embed_dim: int = param(32, "character embedding size", min=1)
    hidden: int = param(128, "hidden units per direction", min=1)
    num_layers: int = param(1, "recurrent layers", min=1, max=4)
    bidirectional: bool = param(True, "read the sentence both ways")
    pooling: str = param("concat", "sentence representation", choices=POOLINGS)
    dropout: float = param(0.2, "dropout on recurrent outputs", min=0.0, max=0.9)
    epochs: int = param(6, "training epochs", min=1)
    batch_size: int = param(64, "batch size", min=1)
    lr: float = param(3e-3, "peak learning rate (AdamW, one-cycle)", min=0.0)
    weight_decay: float = param(0.01, "weight decay", min=0.0)
    val_fraction: float = param(0.1, "validation fraction", min=0.01, max=0.5)
    test_fraction: float = param(0.15, "held-out test fraction", min=0.01, max=0.5)


def load_language_data(cfg: LanguageConfig, seed: int = 0):
    corpus = load_language_excerpts(cfg.data_path or None, cfg.min_chars)
    langs = sorted(corpus)
    texts, labels = [], []
    g = torch.Generator().manual_seed(seed)
    for k, lang in enumerate(langs):
        lines = [ln for ln in corpus[lang] if "gutenberg" not in ln.lower()]
        if cfg.per_language and len(lines) > cfg.per_language:
            keep = torch.randperm(len(lines), generator=g)[: cfg.per_language].sort().values.tolist()
            lines = [lines[i] for i in keep]
        texts += [ln[: cfg.max_len] for ln in lines]
        labels += [k] * len(lines)
    if len(langs) < 2:
        raise UserError(f"need text files of at least 2 languages, found {langs}")
    return texts, torch.tensor(labels), langs


@recipe("char-rnn-language", "which language is a sentence in? character-level RNN/LSTM/GRU over 7 languages",
        LanguageConfig, family="sequence", target="test_accuracy >= 0.95", main_metric="test_accuracy")
def char_rnn_language(cfg: LanguageConfig, ctx: RunContext) -> dict:
    texts, labels, langs = load_language_data(cfg, ctx.seed)
    tr, va, te = _split3(labels, cfg.val_fraction, cfg.test_fraction, ctx.seed)
    vocab = char_vocab([texts[i] for i in tr.tolist()], min_freq=2)
    ids = encode_texts(texts, vocab, "char")
    classes = [LANGUAGE_NAMES.get(c, c) for c in langs]
    ctx.say(f"language excerpts: {len(tr)} train / {len(va)} val / {len(te)} test lines, {len(langs)} languages, "
            f"{len(vocab)} characters")

    def loader(idx, shuffle):
        idx = idx.tolist()
        return BucketLoader([ids[i] for i in idx], labels[idx], batch_size=cfg.batch_size if shuffle else 256,
                            shuffle=shuffle, seed=ctx.seed)

    model = SequenceClassifier(len(vocab), len(langs), cfg.embed_dim, cfg.hidden, cfg.num_layers, cfg.cell,
                               cfg.bidirectional, cfg.dropout, cfg.pooling, max_len=cfg.max_len)
    learner = _fit_classifier(ctx, model, len(langs), loader(tr, True), loader(va, False), epochs=cfg.epochs,
                              lr=cfg.lr, weight_decay=cfg.weight_decay)
    metrics = _evaluate(learner, loader(te, False), classes, ctx)
    write_json(ctx.run.path / "vocab.json", {**vocab.to_dict(), "classes": classes})
    ctx.outputs.update(model=model, vocab=vocab, classes=classes)
    ctx.say(f"test accuracy {metrics['test_accuracy']:.4f}")
    return metrics


def classify_texts(model: SequenceClassifier, vocab: Vocab, texts: list[str], classes: list[str]) -> list[str]:
    """Predicted class names for raw strings with a trained character-level classifier."""
    from learnloop.data.text import pad_sequences

    ids, lengths = pad_sequences(encode_texts(texts, vocab, "char"), max_len=model.max_len or None)
    model.eval()
    with torch.no_grad():
        return [classes[i] for i in predictions(model(ids, lengths)).tolist()]


# --- char-lm -------------------------------------------------------------------------------------------
@dataclass
class CharLMConfig:
    data_path: str = param("", "folder of fortune files (default: /usr/share/games/fortunes)")
    cell: str = param("lstm", "recurrent cell", choices=CELLS)
    embed_dim: int = param(32, "character embedding size", min=1)
    hidden: int = param(256, "hidden units", min=1)
    num_layers: int = param(2, "recurrent layers", min=1, max=4)
    dropout: float = param(0.1, "dropout on recurrent outputs", min=0.0, max=0.9)
    seq_len: int = param(100, "training window (truncated BPTT length)", min=8)
    batch_size: int = param(64, "windows per batch", min=1)
    batches_per_epoch: int = param(100, "batches of random windows per epoch (default: 6 x 100 x 64 windows of "
                                   "100 chars, ~1.7 passes over the 2.3M-char text)", min=1)
    epochs: int = param(6, "epochs", min=1)
    lr: float = param(1e-2, "peak learning rate (AdamW)", min=0.0)
    schedule: str = param("one-cycle", "learning-rate schedule", choices=KINDS)
    weight_decay: float = param(0.01, "weight decay", min=0.0)
    clip_grad_norm: float = param(1.0, "clip the gradient norm", min=0.0)
    val_batches: int = param(8, "validation batches of 128 windows (0: the whole validation text)", min=0)
    sample_chars: int = param(400, "characters sampled per temperature after training", min=0)
    temperatures: tuple[float, ...] = param((0.5, 0.8, 1.0), "sampling temperatures", min=0.0)
    prompt: str = param("The ", "sampling prompt")


def fortunes_lm_data(cfg: CharLMConfig, seed_split: int = 0):
    train_docs, val_docs = fortunes_documents(0.1, seed_split, cfg.data_path or None)
    train = "\n\n".join(e for _, e in train_docs) + "\n"
    val = "\n\n".join(e for _, e in val_docs) + "\n"
    vocab = char_vocab([train], min_freq=5)
    return train, val, vocab


def build_lm(cfg: CharLMConfig, vocab_size: int) -> CharLM:
    return CharLM(vocab_size, cfg.embed_dim, cfg.hidden, cfg.num_layers, cfg.cell, cfg.dropout)


def train_char_lm(cfg: CharLMConfig, ctx: RunContext, name: str = "") -> tuple[CharLM, Vocab, dict]:
    train, val, vocab = fortunes_lm_data(cfg)
    ctx.say(f"fortunes LM: {len(train):,} train / {len(val):,} validation characters, vocabulary {len(vocab)}")
    tr_ids = torch.tensor(vocab.encode(list(train)))
    va_ids = torch.tensor(vocab.encode(list(val)))
    model = build_lm(cfg, len(vocab))
    task = TokenPrediction(model, "adamw", cfg.lr, cfg.weight_decay)
    train_loader = LMWindowLoader(tr_ids, cfg.seq_len, cfg.batch_size, cfg.batches_per_epoch, seed=ctx.seed)
    val_loader = LMWindowLoader(va_ids, cfg.seq_len, 128, cfg.val_batches or None, shuffle=False)
    learner = ctx.learner(task, train_loader, val_loader, epochs=cfg.epochs, name=name,
                          schedule=ScheduleConfig(kind=cfg.schedule), clip_grad_norm=cfg.clip_grad_norm)
    ctx.fit(learner)
    best = learner.checkpoint_path("best")
    if best is not None and best.exists():
        model.load_state_dict(load_state(best)["modules"]["model"])
    tag = f"{name}_" if name else ""
    write_json(ctx.run.path / f"{tag}vocab.json", vocab.to_dict())
    metrics = {"val_loss_nats_per_char": learner.best, "val_bpc": learner.best / math.log(2),
               "train_chars_seen": learner.step * cfg.batch_size * cfg.seq_len}
    if learner.history:
        plot_curves(learner.history, ctx.run.plots / f"{tag}lm_curves.png", title="character LM")
    if cfg.sample_chars:
        g = torch.Generator().manual_seed(ctx.seed)
        parts = []
        for tau in cfg.temperatures:
            out = model.sample(vocab.encode(list(cfg.prompt)), cfg.sample_chars, tau, g)
            parts.append(f"=== temperature {tau} ===\n{cfg.prompt}{''.join(vocab.decode(out))}\n")
        write_text(ctx.run.samples / f"{tag}samples.txt", "\n".join(parts))
        ctx.say(parts[min(1, len(parts) - 1)])
    return model, vocab, {f"{tag}{k}": v for k, v in metrics.items()}


@recipe("char-lm", "character-level LSTM language model on the fortunes corpus, with temperature sampling",
        CharLMConfig, family="sequence", target="val_loss_nats_per_char reported (lower is better)",
        main_metric="val_loss_nats_per_char")
def char_lm(cfg: CharLMConfig, ctx: RunContext) -> dict:
    model, vocab, metrics = train_char_lm(cfg, ctx)
    ctx.outputs.update(model=model, vocab=vocab)
    ctx.say(f"validation loss {metrics['val_loss_nats_per_char']:.4f} nats/char")
    return metrics


# --- ulmfit-classify -----------------------------------------------------------------------------------
FORTUNE_CLASSES = ("computers", "definitions", "politics", "science", "songs-poems", "startrek", "zippy")


@dataclass
class UlmfitConfig:
    lm: CharLMConfig = field(default_factory=lambda: CharLMConfig(sample_chars=200),
                             metadata={"help": "the language model (stage 'lm')"})
    lm_run: str = param("", "folder of a finished char-lm run to start from (skips stage 'lm')")
    categories: tuple[str, ...] = param(FORTUNE_CLASSES, "fortune files used as classes")
    train_per_class: int = param(20, "labelled fortunes per class, split into train/validation (0: all)", min=0)
    max_len: int = param(200, "truncate fortunes to this many characters", min=8)
    epochs: int = param(12, "classifier epochs, both arms (ULMFiT: one more group unfrozen per epoch)", min=1)
    batch_size: int = param(16, "batch size", min=1)
    lr: float = param(1e-2, "ULMFiT: peak rate of the head (lower groups: lr / decay^k)", min=0.0)
    scratch_lrs: tuple[float, ...] = param((1e-3, 3e-3, 1e-2), "from scratch: peak rates tried for every "
                                           "layer; the one with the best validation accuracy is reported",
                                           min=0.0)
    discriminative_decay: float = param(2.6, "ULMFiT: each lower layer group gets lr / decay", min=1.0)
    gradual_unfreeze: bool = param(True, "ULMFiT: unfreeze one layer group per epoch, from the top")
    dropout: float = param(0.2, "classifier dropout on recurrent outputs", min=0.0, max=0.9)
    head_hidden: int = param(50, "hidden units of the two-layer classifier head (0: one linear layer)", min=0)
    head_dropout: float = param(0.3, "dropout before each layer of the classifier head", min=0.0, max=0.9)
    val_fraction: float = param(0.2, "validation fraction of the labelled fortunes", min=0.01, max=0.5)
    warmup: float = param(0.1, "fraction of the steps the one-cycle rate rises (ULMFiT's slanted triangular "
                          "rate uses 0.1), both arms", min=0.0, max=1.0)
    scratch: bool = param(True, "also train the same classifier from scratch (the comparison)")


def fortune_classification_data(cfg: UlmfitConfig, vocab: Vocab, seed: int = 0):
    """Train/val from the LM's training fortunes, test from its validation fortunes (never seen by the LM)."""
    train_docs, test_docs = fortunes_documents(0.1, 0, cfg.lm.data_path or None)
    cats = list(cfg.categories)
    known = {c for c, _ in train_docs + test_docs}
    missing = [c for c in cats if c not in known]
    if missing:
        raise UserError(f"unknown fortune categories {missing}; available: {', '.join(sorted(known))}")
    index = {c: k for k, c in enumerate(cats)}

    def encode(docs):
        docs = [(index[c], e) for c, e in docs if c in index]
        return [vocab.encode(list(e[: cfg.max_len])) for _, e in docs], torch.tensor([y for y, _ in docs])

    ids, labels = encode(train_docs)
    if cfg.train_per_class:
        keep = []
        g = torch.Generator().manual_seed(seed)
        for k in range(len(cats)):
            idx = (labels == k).nonzero().flatten()
            keep.append(idx[torch.randperm(len(idx), generator=g)[: cfg.train_per_class]])
        keep = torch.cat(keep).sort().values
        ids, labels = [ids[i] for i in keep.tolist()], labels[keep]
    tr, va = stratified_split(labels, cfg.val_fraction, seed=seed)
    test_ids, test_labels = encode(test_docs)
    return ([ids[i] for i in tr.tolist()], labels[tr]), ([ids[i] for i in va.tolist()], labels[va]), \
        (test_ids, test_labels), cats


@recipe("ulmfit-classify", "ULMFiT: fine-tune the fortunes char-LM into a fortune-category classifier "
        "(gradual unfreezing, discriminative rates, concat pooling) vs the same classifier from scratch, "
        "with 20 labelled fortunes per class (16 train + 4 validation)", UlmfitConfig,
        family="sequence", target="ulmfit test_accuracy > scratch test_accuracy (scratch rate tuned on "
        "validation) on the same split, 20 labelled fortunes per class", main_metric="ulmfit_test_accuracy")
def ulmfit_classify(cfg: UlmfitConfig, ctx: RunContext) -> dict:
    metrics = {}
    if cfg.lm_run:
        folder = Path(cfg.lm_run)
        ckpt, vocab_file = folder / "checkpoints" / "best.safetensors", folder / "vocab.json"
        if not ckpt.exists() or not vocab_file.exists():
            raise UserError(f"{folder}: not a finished char-lm run (needs checkpoints/best.safetensors, vocab.json)")
        lm_cfg = from_dict(CharLMConfig, read_json(folder / "config.json")["config"])
        vocab = Vocab.from_dict(read_json(vocab_file))
        lm = build_lm(lm_cfg, len(vocab))
        lm.load_state_dict(load_state(ckpt)["modules"]["model"])
        ctx.say(f"language model from {folder}")
    else:
        lm_cfg = cfg.lm
        lm, vocab, lm_metrics = train_char_lm(lm_cfg, ctx, name="lm")
        metrics.update(lm_metrics)
    (tr_ids, tr_y), (va_ids, va_y), (te_ids, te_y), cats = fortune_classification_data(cfg, vocab, ctx.seed)
    ctx.say(f"fortune categories {cats}: {len(tr_ids)} train / {len(va_ids)} val / {len(te_ids)} test")

    def loader(ids, y, shuffle):
        return BucketLoader(ids, y, batch_size=cfg.batch_size if shuffle else 128, shuffle=shuffle, seed=ctx.seed)

    def classifier():
        return SequenceClassifier(len(vocab), len(cats), lm_cfg.embed_dim, lm_cfg.hidden, lm_cfg.num_layers,
                                  lm_cfg.cell, dropout=cfg.dropout, pooling="concat", max_len=cfg.max_len,
                                  head_hidden=cfg.head_hidden, head_dropout=cfg.head_dropout)

    torch.manual_seed(ctx.seed)
    model = classifier()
    model.encoder.load_state_dict(lm.encoder.state_dict())
    learner = _fit_classifier(ctx, model, len(cats), loader(tr_ids, tr_y, True), loader(va_ids, va_y, False),
                              epochs=cfg.epochs, lr=cfg.lr, name="ulmfit", weight_decay=0.01,
                              discriminative_decay=cfg.discriminative_decay, gradual_unfreeze=cfg.gradual_unfreeze,
                              warmup=cfg.warmup)
    metrics["ulmfit_val_accuracy"] = learner.best
    metrics.update(_evaluate(learner, loader(te_ids, te_y, False), cats, ctx, "ulmfit"))
    ctx.outputs.update(model=model, vocab=vocab, classes=cats)
    if cfg.scratch and cfg.scratch_lrs:
        # the baseline gets its rate tuned on the validation split (ULMFiT keeps the paper's single rate)
        tried = []
        for lr in cfg.scratch_lrs:
            torch.manual_seed(ctx.seed)
            scratch = classifier()
            learner = _fit_classifier(ctx, scratch, len(cats), loader(tr_ids, tr_y, True),
                                      loader(va_ids, va_y, False), epochs=cfg.epochs, lr=lr,
                                      name=f"scratch_lr{lr:g}", weight_decay=0.01, warmup=cfg.warmup)
            val = learner.validate(loader(va_ids, va_y, False), "val")
            metrics[f"scratch_lr{lr:g}_val_accuracy"] = val["val_accuracy"]
            ctx.say(f"from scratch, lr {lr:g}: validation accuracy {val['val_accuracy']:.4f}")
            tried.append((val["val_accuracy"], -val["val_loss"], lr, scratch, learner))
        _, _, best_lr, scratch, learner = max(tried, key=lambda t: t[:2])
        metrics["scratch_lr"] = best_lr
        metrics["scratch_val_accuracy"] = metrics[f"scratch_lr{best_lr:g}_val_accuracy"]
        metrics.update(_evaluate(learner, loader(te_ids, te_y, False), cats, ctx, "scratch"))
        metrics["ulmfit_gain"] = metrics["ulmfit_test_accuracy"] - metrics["scratch_test_accuracy"]
        plot_bars({"ULMFiT": metrics["ulmfit_test_accuracy"], "from scratch": metrics["scratch_test_accuracy"]},
                  ctx.run.plots / "ulmfit_vs_scratch.png", "test accuracy", "fortune category, same split")
        ctx.say(f"test accuracy: ULMFiT {metrics['ulmfit_test_accuracy']:.4f}, from scratch (lr {best_lr:g}) "
                f"{metrics['scratch_test_accuracy']:.4f}")
    return metrics


# --- next-number -----------------------------------------------------------------------------------------
def number_sequences(n: int, length: int, noise: float, generator: torch.Generator):
    """Half noisy arithmetic progressions a + k d, half noisy sines A sin(2 pi k / p + phi); the target is
    the next noiseless value. Returns x (n, length, 1), y (n, 1)."""
    k = torch.arange(length + 1, dtype=torch.float32)
    half = n // 2
    a = torch.rand(half, 1, generator=generator) * 2 - 1
    d = (torch.rand(half, 1, generator=generator) * 2 - 1) * 0.1
    arith = a + d * k
    amp = 0.5 + torch.rand(n - half, 1, generator=generator)
    period = torch.randint(4, 13, (n - half, 1), generator=generator).float()
    phase = torch.rand(n - half, 1, generator=generator) * 2 * math.pi
    sine = amp * torch.sin(2 * math.pi * k / period + phase)
    seqs = torch.cat([arith, sine])
    x = seqs[:, :-1] + noise * torch.randn(n, length, generator=generator)
    return x.unsqueeze(2), seqs[:, -1:]


def recall_sequences(n: int, lag: int, generator: torch.Generator, ragged: bool = False):
    """Long dependency: x_0 is a value v in [-1, 1] (flagged by a second feature), then `lag` steps of noise;
    the target is v. Returns x (n, lag + 1, 2), lengths (n,), y (n, 1). With `ragged`, each sequence is cut
    to a random length in [1, lag + 1]: short sequences let a network discover what to store, long ones
    whether it can keep it (the test set always uses the full lag)."""
    v = torch.rand(n, 1, generator=generator) * 2 - 1
    x = torch.randn(n, lag + 1, generator=generator) * 0.5
    x[:, 0] = v[:, 0]
    flag = torch.zeros(n, lag + 1)
    flag[:, 0] = 1.0                                    # marks the value to remember
    lengths = torch.randint(1, lag + 2, (n,), generator=generator) if ragged else torch.full((n,), lag + 1)
    return torch.stack([x, flag], dim=2), lengths, v


@dataclass
class NextNumberConfig:
    cells: tuple[str, ...] = param(("rnn", "lstm", "gru"), "cells to compare", choices=CELLS)
    hidden: int = param(32, "hidden units", min=1)
    length: int = param(20, "observed steps of the arithmetic/periodic sequences", min=3)
    noise: float = param(0.05, "observation noise", min=0.0)
    lags: tuple[int, ...] = param((5, 20, 60), "dependency lengths for the recall task (trained on random "
                                  "lengths up to the lag, tested at the full lag)", min=1)
    train_size: int = param(4000, "training sequences per task", min=10)
    test_size: int = param(1000, "test sequences per task", min=10)
    epochs: int = param(12, "epochs per task", min=1)
    batch_size: int = param(64, "batch size", min=1)
    lr: float = param(3e-3, "peak learning rate", min=0.0)


@recipe("next-number", "predict the next value of noisy arithmetic/periodic sequences; RNN vs LSTM vs GRU, "
        "and where the plain RNN fails on long dependencies", NextNumberConfig, family="sequence",
        target="LSTM/GRU recall MSE at the longest lag < 0.5 x the plain RNN's", main_metric="gru_next_mse")
def next_number(cfg: NextNumberConfig, ctx: RunContext) -> dict:
    g = torch.Generator().manual_seed(ctx.seed)
    tasks = {"next": (number_sequences(cfg.train_size, cfg.length, cfg.noise, g),
                      number_sequences(cfg.test_size, cfg.length, cfg.noise, g), 1)}
    for lag in cfg.lags:
        tasks[f"recall{lag}"] = (recall_sequences(cfg.train_size, lag, g, ragged=True),
                                 recall_sequences(cfg.test_size, lag, g), 2)
    metrics, curves = {}, {}
    for cell in cfg.cells:
        for tname, (train_data, test_data, size) in tasks.items():
            torch.manual_seed(ctx.seed)
            model = SequenceRegressor(size, cfg.hidden, 1, cell)
            task = SequenceRegression(model, "adamw", cfg.lr)
            train = TensorLoader(train_data, cfg.batch_size, shuffle=True, seed=ctx.seed)
            test = TensorLoader(test_data, 1024)
            learner = ctx.learner(task, train, test, epochs=cfg.epochs, name=f"{cell}_{tname}",
                                  schedule=ScheduleConfig(kind="one-cycle"), clip_grad_norm=1.0)
            ctx.fit(learner)
            m = learner.validate(test, "test")
            metrics[f"{cell}_{tname}_mse"] = m["test_loss"]
            ctx.say(f"{cell:4s} {tname:9s} test MSE {m['test_loss']:.4f}")
        baseline = float(((tasks["next"][1][1] - tasks["next"][1][0][:, -1]) ** 2).mean())  # "repeat the last value"
        metrics["last_value_baseline_next_mse"] = baseline
        curves[cell] = (list(cfg.lags), [metrics[f"{cell}_recall{lag}_mse"] for lag in cfg.lags])
    plot_lines(curves, ctx.run.plots / "recall_mse_by_lag.png", "lag (steps between the value and the answer)",
               "test MSE (variance of the target: 0.33)", "remembering one number", logy=True)
    plot_bars({c: metrics[f"{c}_next_mse"] for c in cfg.cells}, ctx.run.plots / "next_value_mse.png",
              "test MSE", "next value of arithmetic/periodic sequences")
    return metrics


# --- rnn-qa ---------------------------------------------------------------------------------------------
def load_faq(path: str | Path | None = None) -> tuple[list[str], list[str], list[str]]:
    """(questions, answers, splits) from a CSV with columns question, answer and optional split
    (train/test). Missing columns or an empty/non-UTF-8 file are one clear error."""
    path = Path(path) if path else ASSETS / "faq.csv"
    text = read_text(path)
    rows = list(csv.DictReader(text.splitlines()))
    cols = set(rows[0]) if rows else set(next(csv.reader(text.splitlines()), []))
    missing = [c for c in ("question", "answer") if c not in cols]
    if missing:
        raise CorruptFileError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(sorted(cols))})")
    rows = [r for r in rows if (r.get("question") or "").strip() and (r.get("answer") or "").strip()]
    if not rows:
        raise CorruptFileError(f"{path}: no question/answer rows")
    return ([r["question"].strip() for r in rows], [r["answer"].strip() for r in rows],
            [(r.get("split") or "train").strip().lower() for r in rows])


@dataclass
class QAConfig:
    csv: str = param("", "CSV with question,answer[,split] columns (default: the shipped learnloop FAQ)")
    test_fraction: float = param(0.2, "held-out fraction when the CSV has no split column", min=0.05, max=0.5)
    cell: str = param("gru", "recurrent cell", choices=CELLS)
    embed_dim: int = param(64, "word embedding size", min=1)
    hidden: int = param(64, "hidden units per direction", min=1)
    word_dropout: float = param(0.15, "drop this fraction of words of training questions (augmentation)",
                                min=0.0, max=0.8)
    copies: int = param(20, "augmented copies of each training question per epoch", min=1)
    epochs: int = param(15, "training epochs", min=1)
    batch_size: int = param(32, "batch size", min=1)
    lr: float = param(3e-3, "peak learning rate", min=0.0)
    max_len: int = param(40, "longest question in words", min=2)


def _augment(questions: list[list[str]], labels: list[int], copies: int, p: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    out_q, out_y = [], []
    for _ in range(copies):
        for q, y in zip(questions, labels):
            keep = (torch.rand(len(q), generator=g) >= p).tolist()
            words = [w for w, k in zip(q, keep) if k] or q
            out_q.append(words)
            out_y.append(y)
    return out_q, out_y


@recipe("rnn-qa", "question answering over a CSV of question/answer pairs: a GRU question encoder "
        "classifies into answers; accuracy on paraphrased held-out questions", QAConfig, family="sequence",
        target="test_accuracy on held-out paraphrases reported", main_metric="test_accuracy")
def rnn_qa(cfg: QAConfig, ctx: RunContext) -> dict:
    questions, answers, splits = load_faq(cfg.csv or None)
    answer_list = sorted(set(answers))
    y_all = [answer_list.index(a) for a in answers]
    if "test" not in splits:
        test_idx = set(stratified_split(torch.tensor(y_all), cfg.test_fraction, seed=ctx.seed)[1].tolist())
        splits = ["test" if i in test_idx else "train" for i in range(len(questions))]
    train = [i for i, s in enumerate(splits) if s != "test"]
    test = [i for i, s in enumerate(splits) if s == "test"]
    if not train or not test:
        raise UserError("rnn-qa needs both training and held-out questions")
    tok = [word_tokens(q) for q in questions]
    too_long = [len(t) for t in tok if len(t) > cfg.max_len]
    if too_long:
        raise UserError(f"question of {max(too_long)} words exceeds the model's limit of {cfg.max_len} (set max_len)")
    vocab = word_vocab([questions[i] for i in train])
    ctx.say(f"FAQ: {len(answer_list)} answers, {len(train)} training questions, {len(test)} held-out paraphrases, "
            f"{len(vocab)} words")
    aug_q, aug_y = _augment([tok[i] for i in train], [y_all[i] for i in train], cfg.copies, cfg.word_dropout,
                            ctx.seed)
    tr_loader = BucketLoader([vocab.encode(q) for q in aug_q], torch.tensor(aug_y), batch_size=cfg.batch_size,
                             seed=ctx.seed)
    te_loader = BucketLoader([vocab.encode(tok[i]) for i in test], torch.tensor([y_all[i] for i in test]),
                             batch_size=256, shuffle=False)
    model = SequenceClassifier(len(vocab), len(answer_list), cfg.embed_dim, cfg.hidden, 1, cfg.cell,
                               bidirectional=True, dropout=0.3, pooling="concat", max_len=cfg.max_len,
                               embed_dropout=0.1)
    learner = _fit_classifier(ctx, model, len(answer_list), tr_loader, te_loader, epochs=cfg.epochs, lr=cfg.lr,
                              weight_decay=0.01, label_smoothing=0.1)
    metrics = learner.validate(te_loader, "test")
    # answers to the held-out questions, for reading
    model.eval()
    lines = []
    with torch.no_grad():
        for i in test:
            ids = torch.tensor([vocab.encode(tok[i])])
            pred = answer_list[int(model(ids).argmax())]
            mark = "ok " if pred == answers[i] else "NO "
            lines.append(f"{mark} Q: {questions[i]}\n    A: {pred}")
    write_text(ctx.run.samples / "heldout_answers.txt", "\n".join(lines) + "\n")
    ctx.outputs.update(model=model, vocab=vocab, answers=answer_list)
    ctx.say(f"held-out paraphrase accuracy {metrics['test_accuracy']:.3f}")
    return metrics


def answer(model: SequenceClassifier, vocab: Vocab, answers: list[str], question: str) -> str:
    """The answer a trained rnn-qa model gives to a free-text question."""
    words = word_tokens(question)
    if model.max_len and len(words) > model.max_len:
        raise UserError(f"question of {len(words)} words exceeds the model's limit of {model.max_len}")
    model.eval()
    with torch.no_grad():
        return answers[int(model(torch.tensor([vocab.encode(words) or [1]])).argmax())]


# --- vanishing-through-time ------------------------------------------------------------------------------
@dataclass
class VanishingConfig:
    cells: tuple[str, ...] = param(("rnn", "lstm", "gru"), "cells to compare", choices=CELLS)
    steps: int = param(50, "sequence length T (the recall task's lag is T - 1)", min=2)
    hidden: int = param(32, "hidden units", min=1)
    batch: int = param(256, "sequences the gradient norms are averaged over", min=1)
    train_size: int = param(3000, "training sequences of the recall task", min=10)
    epochs: int = param(10, "training epochs on the recall task (0: only the untrained networks)", min=0)
    lr: float = param(3e-3, "peak learning rate", min=0.0)


def hidden_grad_norms(model: SequenceRegressor, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """||dL/dh_t|| for t = 1..T (mean over the batch), L = MSE of the model's read-out of h_T.

    The network's weights are stepped with the cell equations of `learnloop.nn.recurrent`, so every h_t is
    a node of the autograd graph whose gradient we keep (retain_grad)."""
    from learnloop.nn.recurrent import gru_cell, lstm_cell, rnn_cell

    layer = model.encoder.layers[0]
    w = layer._weights(0, 0)
    cell = model.encoder.cell
    B, T, _ = x.shape
    h = x.new_zeros(B, layer.hidden_size)
    c = x.new_zeros(B, layer.hidden_size)
    hs = []
    for t in range(T):
        if cell == "lstm":
            h, c = lstm_cell(x[:, t], (h, c), w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        elif cell == "gru":
            h = gru_cell(x[:, t], h, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        else:
            h = rnn_cell(x[:, t], h, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        h.retain_grad()
        hs.append(h)
    loss = torch.nn.functional.mse_loss(model.head(h), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return [float(hh.grad.norm(dim=1).mean()) for hh in hs]


@recipe("vanishing-through-time", "gradient norm of the loss w.r.t. the hidden state at each time step: "
        "RNN vs LSTM vs GRU, untrained and after learning a long-lag recall task", VanishingConfig,
        family="sequence", target="after training, RNN's ||dL/dh_1|| / ||dL/dh_T|| far below LSTM's and GRU's",
        main_metric="rnn_trained_first_last_ratio")
def vanishing_through_time(cfg: VanishingConfig, ctx: RunContext) -> dict:
    g = torch.Generator().manual_seed(ctx.seed)
    train_data = recall_sequences(cfg.train_size, cfg.steps - 1, g, ragged=True)
    xp, lp, yp = recall_sequences(cfg.batch, cfg.steps - 1, g)      # probe batch for the gradient norms
    curves, metrics = {}, {}
    stages = ["init"] + (["trained"] if cfg.epochs else [])
    for cell in cfg.cells:
        torch.manual_seed(ctx.seed)
        model = SequenceRegressor(2, cfg.hidden, 1, cell)
        for stage in stages:
            if stage == "trained":
                task = SequenceRegression(model, "adamw", cfg.lr)
                train = TensorLoader(train_data, 64, shuffle=True, seed=ctx.seed)
                probe = TensorLoader((xp, lp, yp), 1024)
                learner = ctx.learner(task, train, probe, epochs=cfg.epochs, name=cell,
                                      schedule=ScheduleConfig(kind="one-cycle"), clip_grad_norm=1.0)
                ctx.fit(learner)
                metrics[f"{cell}_recall_mse"] = learner.validate(probe, "probe")["probe_loss"]
            norms = hidden_grad_norms(model, xp, yp)
            curves[f"{cell.upper()} {stage}"] = (list(range(1, cfg.steps + 1)), norms)
            metrics[f"{cell}_{stage}_first_last_ratio"] = norms[0] / norms[-1]
            ctx.say(f"{cell:4s} {stage:7s} ||dL/dh_1|| / ||dL/dh_T|| = {norms[0] / norms[-1]:.3e}")
    plot_lines(curves, ctx.run.plots / "grad_norm_through_time.png", "time step t",
               "mean ||dL/dh_t||", f"gradients through {cfg.steps} steps (recall task, lag {cfg.steps - 1})",
               logy=True)
    write_json(ctx.run.path / "grad_norms.json", {k: v[1] for k, v in curves.items()})
    return metrics
