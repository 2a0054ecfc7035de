"""char-rnn-language: which language is a sentence in? A character-level recurrent classifier (RNN, LSTM or
GRU, learnloop.nn.recurrent) over music21's excerpts of 7 languages, one label per line.

Lines are split stratified by language into train/validation/test; the vocabulary is the training lines'
characters seen at least `data.min_freq` times; the epoch with the best validation accuracy is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnloop.data import stratified_split
from learnloop.data.text import LANGUAGE_NAMES, BucketLoader, Vocab, char_vocab, encode_texts, load_language_excerpts
from learnloop.errors import UserError
from learnloop.recipes.base import Bundle, Predictor, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.sequence.common import (
    EVAL_BATCH,
    TextClassifierModelConfig,
    TextClassifierParts,
    TextClassPredictor,
    evaluate_sequence_classifier,
    train_section,
)


@dataclass
class LanguageDataConfig:
    path: str = param("", "folder of <language>.txt files (default: music21's language excerpts)")
    min_chars: int = param(20, "ignore lines shorter than this", min=1)
    per_language: int = param(1500, "at most this many lines per language (0: all)", min=0)
    max_len: int = param(160, "truncate lines to this many characters (the model's limit)", min=8)
    min_freq: int = param(2, "characters seen fewer times in the training lines become <unk>", min=1)
    val_fraction: float = param(0.1, "validation fraction", min=0.01, max=0.5)
    test_fraction: float = param(0.15, "held-out test fraction", min=0.01, max=0.5)


@dataclass
class LanguageConfig:
    data: LanguageDataConfig = section(LanguageDataConfig, "data")
    model: TextClassifierModelConfig = section(TextClassifierModelConfig, "character-level classifier")
    train: TrainConfig = train_section("training (AdamW, one-cycle; the best validation accuracy is kept)",
                                       epochs=6, batch_size=64, lr=3e-3, weight_decay=0.01)
    label_smoothing: float = param(0.0, "label smoothing epsilon", min=0.0, max=0.5)


def load_language_data(data: LanguageDataConfig, seed: int = 0):
    corpus = load_language_excerpts(data.path or None, data.min_chars)
    langs = sorted(corpus)
    texts, labels = [], []
    g = torch.Generator().manual_seed(seed)
    for k, lang in enumerate(langs):
        lines = [ln for ln in corpus[lang] if "gutenberg" not in ln.lower()]
        if data.per_language and len(lines) > data.per_language:
            keep = torch.randperm(len(lines), generator=g)[: data.per_language].sort().values.tolist()
            lines = [lines[i] for i in keep]
        texts += [ln[: data.max_len] for ln in lines]
        labels += [k] * len(lines)
    if len(langs) < 2:
        raise UserError(f"need text files of at least 2 languages, found {langs}")
    return texts, torch.tensor(labels), langs


def split3(labels: torch.Tensor, val: float, test: float, seed: int):
    """Stratified (train, val, test) indices: `test` of every class first, then `val` of the whole."""
    rest, test_idx = stratified_split(labels, test, seed=seed + 1)
    tr, va = stratified_split(labels[rest], val / (1 - test), seed=seed)
    return rest[tr], rest[va], test_idx


LANGUAGE_EXAMPLES = ["Der Hund schläft im Garten, und die Katze sitzt auf dem Dach.",
                     "Le chat dort sur le canapé pendant que la pluie tombe.",
                     "The committee will publish its report early next week."]


@recipe("char-rnn-language", "which language is a sentence in? character-level RNN/LSTM/GRU over 7 languages",
        LanguageConfig, target="test_accuracy >= 0.95", main_metric="test_accuracy",
        smoke={"train.epochs": 1, "data.per_language": 30, "data.max_len": 40, "model.hidden": 16,
               "model.embed_dim": 8})
class LanguageId(TextClassifierParts):
    def data(self, cfg: LanguageConfig, seed: int) -> Bundle:
        texts, labels, langs = load_language_data(cfg.data, seed)
        tr, va, te = split3(labels, cfg.data.val_fraction, cfg.data.test_fraction, seed)
        vocab = char_vocab([texts[i] for i in tr.tolist()], min_freq=cfg.data.min_freq)
        ids = encode_texts(texts, vocab, "char")

        def loader(idx, shuffle):
            idx = idx.tolist()
            return BucketLoader([ids[i] for i in idx], labels[idx],
                                batch_size=cfg.train.batch_size if shuffle else EVAL_BATCH, shuffle=shuffle, seed=seed)

        info = {"vocab": vocab.tokens, "classes": [LANGUAGE_NAMES.get(c, c) for c in langs],
                "sizes": {"train": len(tr), "val": len(va), "test": len(te)}}
        return Bundle(loader(tr, True), loader(va, False), loader(te, False), info)

    def evaluate(self, cfg: LanguageConfig, run, data: Bundle) -> dict:
        metrics = evaluate_sequence_classifier(run.task, data.test, run.info["classes"], run, run.history(""))
        sizes = run.info["sizes"]
        run.say(f"language excerpts: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test lines, "
                f"{len(run.info['classes'])} languages, {len(run.info['vocab'])} characters; "
                f"test accuracy {metrics['test_accuracy']:.4f}")
        return metrics

    def predictor(self, run) -> Predictor:
        return TextClassPredictor(run.task, Vocab(run.info["vocab"]), run.info["classes"], level="char",
                                  max_len=run.cfg.data.max_len, truncate=True, key="language",
                                  inputs="sentences (longer ones are cut to data.max_len characters)",
                                  examples=LANGUAGE_EXAMPLES)
