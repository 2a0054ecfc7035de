"""ulmfit-classify: ULMFiT (Howard & Ruder, 2018) fine-tunes the fortunes char-LM (char_lm.py) into a
fortune-category classifier, against the same classifier trained from scratch on the same split.

Fine-tuning uses discriminative rates eta_l = eta / decay^(L-1-l) for layer group l of L (the head gets
eta), gradual unfreezing (epoch e trains the top min(e+1, L) groups) and concat pooling [h_last, max_t h_t,
mean_t h_t], with a one-cycle rate rising over 0.1 of training (the paper's slanted triangular rate); the
rates and unfreezing come from learnloop.engine.optim over the classifier's `groups()`.
Stages: "lm" unless `lm_run` names a finished char-lm run, then "ulmfit" and one "scratch_lr<rate>" per rate
of the from-scratch baseline's search (the rate with the best validation accuracy is reported). The test
fortunes are ones the LM never saw: its validation fortunes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from learnloop.data import stratified_split
from learnloop.data.text import BucketLoader, Vocab, char_vocab, fortunes_documents
from learnloop.engine.learner import Learner
from learnloop.engine.optim import GradualUnfreezing, OptimConfig, discriminative_param_groups
from learnloop.errors import UserError
from learnloop.models.sequence import POOLINGS, SequenceClassifier
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.sequence.char_lm import (
    LMModelConfig,
    LMSampleConfig,
    LMWindowsConfig,
    lm_loaders,
    lm_task,
    lm_text,
    lm_train,
    report_lm,
)
from learnloop.recipes.sequence.common import (
    EVAL_BATCH,
    TextClassPredictor,
    distinct,
    evaluate_sequence_classifier,
    train_section,
)
from learnloop.tasks.sequence import SequenceClassification
from learnloop.utils.plots import plot_bars

FORTUNE_CLASSES = ("computers", "definitions", "politics", "science", "songs-poems", "startrek", "zippy")


@dataclass
class FortuneClassesConfig:
    path: str = param("", "folder of fortune files: the labelled fortunes and, without lm_run, the LM's text "
                      "(default: /usr/share/games/fortunes)")
    test_fraction: float = param(0.1, "fraction of the fortunes held out of the LM's training (its validation "
                                 "text); the classifier is tested on those of its categories", min=0.01, max=0.5)
    split_seed: int = param(0, "seed of that split (with lm_run: the char-lm run's data.split_seed)", min=0)
    categories: tuple[str, ...] = param(FORTUNE_CLASSES, "fortune files used as classes")
    train_per_class: int = param(20, "labelled fortunes per class, split into train/validation (0: all)", min=0)
    max_len: int = param(200, "truncate fortunes to this many characters", min=8)
    val_fraction: float = param(0.2, "validation fraction of the labelled fortunes", min=0.01, max=0.5)


@dataclass
class UlmfitModelConfig:
    """The classifier over the LM's encoder (its cell, sizes and layers are the LM's)."""

    pooling: str = param("concat", "sequence representation (ULMFiT: concat of last, max, mean)", choices=POOLINGS)
    dropout: float = param(0.2, "classifier dropout on recurrent outputs", min=0.0, max=0.9)
    head_hidden: int = param(50, "hidden units of the two-layer classifier head (0: one linear layer)", min=0)
    head_dropout: float = param(0.3, "dropout before each layer of the classifier head", min=0.0, max=0.9)


@dataclass
class LMStageConfig:
    """The language model trained as stage 'lm' when lm_run is empty (its text: data.path)."""

    data: LMWindowsConfig = section(LMWindowsConfig, "how the LM reads the fortunes")
    model: LMModelConfig = section(LMModelConfig, "model")
    train: TrainConfig = lm_train("training of the LM")
    sample: LMSampleConfig = section(LMSampleConfig, "samples written after training", chars=200)


def _classifier_train(help: str):
    return train_section(help, epochs=12, batch_size=16, lr=1e-2, weight_decay=0.01, pct_start=0.1)


@dataclass
class UlmfitStageConfig:
    train: TrainConfig = _classifier_train("training of the fine-tuned classifier (optim.lr: the head's peak rate;"
                                           " one-cycle rising over 0.1 like ULMFiT's slanted triangular rate)")
    discriminative_decay: float = param(2.6, "layer group l of L trains at lr / decay^(L-1-l)", min=1.0)
    gradual_unfreeze: bool = param(True, "unfreeze one layer group per epoch, from the top")


@dataclass
class ScratchConfig:
    enabled: bool = param(True, "also train the same classifier from scratch (the comparison)")
    lrs: tuple[float, ...] = param((1e-3, 3e-3, 1e-2), "peak rates tried, each replacing train.optim.lr (the "
                                   "one with the best validation accuracy is reported; empty: train.optim.lr)",
                                   min=0.0)
    train: TrainConfig = _classifier_train("training of each from-scratch classifier")


@dataclass
class UlmfitConfig:
    lm_run: str = param("", "folder of a finished char-lm run to start from (skips stage 'lm')")
    data: FortuneClassesConfig = section(FortuneClassesConfig, "the labelled fortunes")
    model: UlmfitModelConfig = section(UlmfitModelConfig, "classifier head and dropout (both arms)")
    lm: LMStageConfig = section(LMStageConfig, "the language model (stage 'lm', without lm_run)")
    ulmfit: UlmfitStageConfig = section(UlmfitStageConfig, "ULMFiT fine-tuning (stage 'ulmfit')")
    scratch: ScratchConfig = section(ScratchConfig, "the from-scratch baseline (stages 'scratch_lr<rate>')")

    MOVED = {"epochs": "ulmfit.train.epochs", "lr": "ulmfit.train.optim.lr", "batch_size": "ulmfit.train.batch_size",
             "warmup": "ulmfit.train.schedule.pct_start", "scratch_lrs": "scratch.lrs", "scratch": "scratch.enabled",
             "dropout": "model.dropout", "lm.epochs": "lm.train.epochs", "lm.lr": "lm.train.optim.lr",
             "lm.batch_size": "lm.train.batch_size", "lm.sample_chars": "lm.sample.chars", "lm.data_path": "data.path",
             "lm.dropout": "lm.model.dropout", "lm.weight_decay": "lm.train.optim.weight_decay",
             "lm.schedule": "lm.train.schedule.kind", "lm.clip_grad_norm": "lm.train.clip_grad_norm"}


def fortune_classification_data(data: FortuneClassesConfig, train_docs, test_docs, seed: int = 0):
    """(texts, labels) for train/val, from the LM's training fortunes, and test, from its validation fortunes
    (never seen by the LM); texts cut to `data.max_len` characters. Returns (train, val, test, categories)."""
    cats = list(data.categories)
    if len(cats) < 2:
        raise UserError("data.categories: a classifier needs at least two categories")
    distinct("data.categories", cats)
    known = {c for c, _ in train_docs + test_docs}
    missing = [c for c in cats if c not in known]
    if missing:
        raise UserError(f"unknown fortune categories {missing}; available: {', '.join(sorted(known))}")
    index = {c: k for k, c in enumerate(cats)}

    def select(docs):
        docs = [(index[c], e) for c, e in docs if c in index]
        return [e[: data.max_len] for _, e in docs], torch.tensor([y for y, _ in docs])

    texts, labels = select(train_docs)
    if data.train_per_class:
        keep = []
        g = torch.Generator().manual_seed(seed)
        for k in range(len(cats)):
            idx = (labels == k).nonzero().flatten()
            keep.append(idx[torch.randperm(len(idx), generator=g)[: data.train_per_class]])
        keep = torch.cat(keep).sort().values
        texts, labels = [texts[i] for i in keep.tolist()], labels[keep]
    tr, va = stratified_split(labels, data.val_fraction, seed=seed)
    return ([texts[i] for i in tr.tolist()], labels[tr]), ([texts[i] for i in va.tolist()], labels[va]), \
        select(test_docs), cats


def _fortune_loader(part: tuple, vocab: Vocab, batch_size: int, shuffle: bool, seed: int) -> BucketLoader:
    texts, labels = part
    return BucketLoader([vocab.encode(list(t)) for t in texts], labels, batch_size=batch_size, shuffle=shuffle,
                        seed=seed)


def _scratch_rates(cfg: UlmfitConfig) -> list[float]:
    if not cfg.scratch.enabled:
        return []
    rates = list(cfg.scratch.lrs) or [cfg.scratch.train.optim.lr]
    distinct("scratch.lrs", [f"{lr:g}" for lr in rates])
    return rates


def _lm_source(cfg: UlmfitConfig, info: dict, upstream: dict) -> tuple[Vocab, LMModelConfig]:
    """The LM's vocabulary and model settings: lm_run's, or this run's stage 'lm'."""
    lm_run = upstream.get("lm_run")
    if lm_run is None:
        return Vocab(info["vocab"]), cfg.lm.model
    theirs, mine = lm_run.cfg.data, cfg.data
    if theirs.path != mine.path:
        raise UserError(f"lm_run: {lm_run.path} was trained on the fortunes in {theirs.path or 'the default'} folder, "
                        f"data.path is {mine.path or 'the default'}; set data.path to the LM's folder")
    if (theirs.val_fraction, theirs.split_seed) != (mine.test_fraction, mine.split_seed):
        raise UserError(f"lm_run: {lm_run.path} held out fortunes with val_fraction {theirs.val_fraction:g}, "
                        f"split_seed {theirs.split_seed}; set data.test_fraction and data.split_seed to those, so "
                        "the test fortunes are ones the LM never saw")
    return Vocab(lm_run.info["vocab"]), lm_run.cfg.model


@recipe("ulmfit-classify", "ULMFiT: fine-tune the fortunes char-LM into a fortune-category classifier "
        "(gradual unfreezing, discriminative rates, concat pooling) vs the same classifier from scratch, "
        "with 20 labelled fortunes per class (16 train + 4 validation)", UlmfitConfig,
        target="ulmfit test_accuracy > scratch test_accuracy (scratch rate tuned on validation) on the same split, "
        "20 labelled fortunes per class", main_metric="ulmfit_test_accuracy",
        benchmark="learnloop run char-lm, then learnloop run ulmfit-classify --set lm_run=<char-lm run>",
        smoke={"lm.train.epochs": 1, "lm.train.batch_size": 4, "lm.data.seq_len": 16, "lm.data.batches_per_epoch": 3,
               "lm.data.val_batches": 1, "lm.data.val_batch_size": 8, "lm.model.hidden": 16,
               "lm.model.num_layers": 1, "lm.model.embed_dim": 8, "lm.sample.chars": 10,
               "data.categories": "zippy,startrek", "data.train_per_class": 10, "data.max_len": 32,
               "ulmfit.train.epochs": 1, "scratch.train.epochs": 1, "scratch.lrs": "3e-3", "model.head_hidden": 8})
class Ulmfit(Parts):
    needs = {"lm_run": ("char-lm",)}

    def data(self, cfg: UlmfitConfig, seed: int) -> Bundle:
        _scratch_rates(cfg)
        d = cfg.data
        train_docs, test_docs = fortunes_documents(d.test_fraction, d.split_seed, d.path or None)
        train, val, test, cats = fortune_classification_data(cfg.data, train_docs, test_docs, seed)
        info = {"classes": cats, "seed": seed, "sizes": {"train": len(train[0]), "val": len(val[0]),
                                                         "test": len(test[0])}}
        extra = {"train": train, "val": val, "test": test}
        if not cfg.lm_run:
            text, val_text = lm_text(train_docs), lm_text(test_docs)
            vocab = char_vocab([text], min_freq=cfg.lm.data.min_freq)
            extra["lm_train"], extra["lm_val"] = lm_loaders(text, val_text, vocab, cfg.lm.data, cfg.lm.train.batch_size,
                                                            seed)
            info.update(vocab=vocab.tokens, lm_train_chars=len(text), lm_val_chars=len(val_text))
        return Bundle(info=info, extra=extra)

    def stages(self, cfg: UlmfitConfig, info: dict, upstream: dict) -> list[Stage]:
        vocab, lm_model = _lm_source(cfg, info, upstream)
        seed, n = info["seed"], len(info["classes"])
        m = cfg.model

        def classifier() -> SequenceClassifier:
            torch.manual_seed(seed)
            return SequenceClassifier(len(vocab), n, lm_model.embed_dim, lm_model.hidden, lm_model.num_layers,
                                      lm_model.cell, dropout=m.dropout, pooling=m.pooling, max_len=cfg.data.max_len,
                                      head_hidden=m.head_hidden, head_dropout=m.head_dropout)

        def loaders(train: TrainConfig):
            return lambda b: (_fortune_loader(b.extra["train"], vocab, train.batch_size, True, seed),
                              _fortune_loader(b.extra["val"], vocab, EVAL_BATCH, False, seed))

        def fine_tuned(trained: dict) -> SequenceClassification:
            lm = trained["lm"] if "lm" in trained else upstream["lm_run"].task
            model = classifier()
            model.encoder.load_state_dict(lm.model.encoder.state_dict())
            u = cfg.ulmfit
            lr, decay, wd = u.train.optim.lr, u.discriminative_decay, u.train.optim.weight_decay
            return SequenceClassification(model, n, u.train.optim, param_groups=lambda mod: discriminative_param_groups(
                mod.groups(), lr, decay, wd))

        def from_scratch(optim: OptimConfig):
            return lambda trained: SequenceClassification(classifier(), n, optim)

        out = []
        if "lm_run" not in upstream:
            out.append(Stage("lm", lambda trained: lm_task(cfg.lm.model, cfg.lm.train.optim, len(vocab)), cfg.lm.train,
                             loaders=lambda b: (b.extra["lm_train"], b.extra["lm_val"])))
        unfreeze = (lambda task: [GradualUnfreezing(task.model.groups)]) if cfg.ulmfit.gradual_unfreeze else None
        out.append(Stage("ulmfit", fine_tuned, cfg.ulmfit.train, loaders=loaders(cfg.ulmfit.train),
                         monitor="val_accuracy", mode="max", callbacks=unfreeze))
        for lr in _scratch_rates(cfg):
            train = replace(cfg.scratch.train, optim=replace(cfg.scratch.train.optim, lr=lr))
            out.append(Stage(f"scratch_lr{lr:g}", from_scratch(train.optim), train, loaders=loaders(train),
                             monitor="val_accuracy", mode="max"))
        return out

    def evaluate(self, cfg: UlmfitConfig, run, data: Bundle) -> dict:
        metrics = {}
        vocab, _ = _lm_source(cfg, run.info, run.upstream)
        if "lm" in run.tasks:
            metrics.update(report_lm(run, "lm", cfg.lm, cfg.lm.data, vocab, prefix="lm_"))
        else:
            run.say(f"language model from {run.upstream['lm_run'].path}")
        cats, sizes = run.info["classes"], run.info["sizes"]
        run.say(f"fortune categories {cats}: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test")
        val = _fortune_loader(data.extra["val"], vocab, EVAL_BATCH, False, 0)
        test = _fortune_loader(data.extra["test"], vocab, EVAL_BATCH, False, 0)
        metrics["ulmfit_val_accuracy"] = Learner(run.tasks["ulmfit"]).validate(val, "val")["val_accuracy"]
        metrics.update(evaluate_sequence_classifier(run.tasks["ulmfit"], test, cats, run, run.history("ulmfit"),
                                                    "ulmfit"))
        rates = _scratch_rates(cfg)
        if not rates:
            return metrics
        # the baseline gets its rate tuned on the validation split (ULMFiT keeps the paper's single rate)
        tried = []
        for lr in rates:
            stage = f"scratch_lr{lr:g}"
            v = Learner(run.tasks[stage]).validate(val, "val")
            metrics[f"{stage}_val_accuracy"] = v["val_accuracy"]
            run.say(f"from scratch, lr {lr:g}: validation accuracy {v['val_accuracy']:.4f}")
            tried.append((v["val_accuracy"], -v["val_loss"], lr))
        _, _, best_lr = max(tried, key=lambda t: t[:2])           # ties: the first rate tried
        stage = f"scratch_lr{best_lr:g}"
        metrics["scratch_lr"] = best_lr
        metrics["scratch_val_accuracy"] = metrics[f"{stage}_val_accuracy"]
        metrics.update(evaluate_sequence_classifier(run.tasks[stage], test, cats, run, run.history(stage), "scratch"))
        metrics["ulmfit_gain"] = metrics["ulmfit_test_accuracy"] - metrics["scratch_test_accuracy"]
        plot_bars({"ULMFiT": metrics["ulmfit_test_accuracy"], "from scratch": metrics["scratch_test_accuracy"]},
                  run.plots / "ulmfit_vs_scratch.png", "test accuracy", "fortune category, same split")
        run.say(f"test accuracy: ULMFiT {metrics['ulmfit_test_accuracy']:.4f}, from scratch (lr {best_lr:g}) "
                f"{metrics['scratch_test_accuracy']:.4f}")
        return metrics

    def predictor(self, run) -> Predictor:
        vocab, _ = _lm_source(run.cfg, run.info, run.upstream)
        return TextClassPredictor(run.tasks["ulmfit"], vocab, run.info["classes"], level="char",
                                  max_len=run.cfg.data.max_len, truncate=True, key="category",
                                  inputs="fortunes or any short texts (longer ones are cut to data.max_len characters)",
                                  examples=["Beam me up, Scotty! There is no intelligent life down here.",
                                            "Are we having fun yet? I want a BURRITO!"])
