"""pretrain-objectives: one corpus (fortunes of 7 categories), one model size, three pre-training objectives,
one stage each: the encoder-only masked LM of BERT (Devlin et al., 2019; 80/10/10 masking), the decoder-only
causal LM of GPT (Radford et al., 2018) and the encoder-decoder span corruption of T5 (Raffel et al., 2020).
Each is scored by its validation loss and by a logistic-regression probe of the fortune category on its
frozen mean-pooled features, against the same probe on the untrained MLM encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnloop.data.collators import (
    CollatingLoader,
    causal_collate,
    mlm_collate,
    span_corruption_collate,
    trim_padding,
)
from learnloop.data.loader import TensorLoader
from learnloop.data.text import Vocab, fortunes_documents, pad_sequences, word_tokens, word_vocab
from learnloop.models.gpt import GPT
from learnloop.models.transformer import Seq2SeqTransformer, TransformerEncoderModel
from learnloop.recipes.base import Bundle, Parts, Stage, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.transformer.common import adamw_cosine, best_value, info_int, info_tokens, stage_curves
from learnloop.tasks.token_prediction import TokenPrediction
from learnloop.utils.plots import plot_bars


PROBE_CLASSES = ("computers", "definitions", "politics", "science", "songs-poems", "startrek", "zippy")
OBJECTIVES = ("mlm", "causal", "span")


def _objective_train(what: str):
    return adamw_cosine(what, epochs=12, batch_size=64, lr=1e-3)


@dataclass
class FortunesDocsData:
    path: str = param("", "folder of fortune files (default: /usr/share/games/fortunes)")
    val_fraction: float = param(0.1, "fraction of the fortunes held out (validation loss and probe test)",
                                min=0.01, max=0.5)
    split_seed: int = param(0, "seed of the train/validation split (the one the LM recipes use)", min=0)
    subset: int = param(0, "use only this many training fortunes (0: all)", min=0)
    vocab_size: int = param(6000, "word vocabulary size (before <mask> and the sentinels)", min=100)
    max_len: int = param(64, "tokens per fortune with <bos> and <eos> (longer ones are truncated)", min=8)
    sentinels: int = param(100, "span corruption: sentinel tokens <extra_i> in the vocabulary", min=1, max=1000)


@dataclass
class PretrainModelConfig:
    """One size for every objective (encoder-decoder: `layers` on each side)."""

    d_model: int = param(128, "model width", min=8)
    nhead: int = param(4, "attention heads", min=1)
    layers: int = param(2, "layers per stack (encoder-decoder: each side)", min=1, max=8)
    dim_feedforward: int = param(0, "feed-forward width (0: 4 x d_model)", min=0)
    dropout: float = param(0.1, "dropout", min=0.0, max=0.9)


@dataclass
class MLMPart:
    mask_prob: float = param(0.15, "fraction of tokens chosen (80% <mask>, 10% random, 10% kept)", min=0.01,
                             max=0.9)
    train: TrainConfig = _objective_train("training of the encoder-only masked LM (stage 'mlm')")


@dataclass
class CausalPart:
    train: TrainConfig = _objective_train("training of the decoder-only causal LM (stage 'causal')")


@dataclass
class SpanPart:
    noise_density: float = param(0.15, "fraction of tokens corrupted", min=0.01, max=0.9)
    mean_span: float = param(3.0, "mean span length", min=1.0)
    train: TrainConfig = _objective_train("training of the encoder-decoder span corruption (stage 'span')")


@dataclass
class ProbeConfig:
    C: float = param(1.0, "inverse L2 strength of the logistic-regression probe", min=1e-6)
    max_iter: int = param(2000, "probe solver iterations", min=10)


@dataclass
class PretrainConfig:
    data: FortunesDocsData = section(FortunesDocsData, "data")
    objectives: tuple[str, ...] = param(OBJECTIVES, "objectives to train (one stage each)", choices=OBJECTIVES)
    model: PretrainModelConfig = section(PretrainModelConfig, "model size of every objective")
    mlm: MLMPart = section(MLMPart, "masked LM (BERT)")
    causal: CausalPart = section(CausalPart, "causal LM (GPT)")
    span: SpanPart = section(SpanPart, "span corruption (T5)")
    eval_batch_size: int = param(256, "batch size of validation and of probe features", min=1)
    probe: ProbeConfig = section(ProbeConfig, "frozen-feature probe")

    MOVED = {"epochs": "mlm.train.epochs", "lr": "mlm.train.optim.lr", "batch_size": "mlm.train.batch_size"}


def _objective_part(cfg: PretrainConfig, objective: str):
    return {"mlm": cfg.mlm, "causal": cfg.causal, "span": cfg.span}[objective]


def pretrain_corpus(cfg: PretrainConfig):
    """Fortunes of PROBE_CLASSES, split as the LM recipes split them; word ids with <mask> and the sentinels."""
    d = cfg.data
    train_docs, val_docs = fortunes_documents(d.val_fraction, d.split_seed, d.path or None, PROBE_CLASSES)
    if d.subset:
        train_docs = train_docs[:d.subset]
    base = word_vocab([t for _, t in train_docs], max_size=d.vocab_size)
    vocab = Vocab(base.tokens + ["<mask>"] + [f"<extra_{i}>" for i in range(d.sentinels)])

    def encode(docs):
        seqs = [[vocab.bos_id, *vocab.encode(word_tokens(t))[:d.max_len - 2], vocab.eos_id] for _, t in docs]
        labels = torch.tensor([PROBE_CLASSES.index(c) for c, _ in docs])
        return pad_sequences(seqs)[0], labels

    return vocab, encode(train_docs), encode(val_docs)


def build_pretrain_model(cfg: PretrainConfig, objective: str, vocab_size: int) -> torch.nn.Module:
    """The model one objective trains (sizes from cfg.model)."""
    m = cfg.model
    kw = {"d_model": m.d_model, "dropout": m.dropout}
    ff = m.dim_feedforward or 4 * m.d_model
    V = vocab_size
    if objective == "mlm":
        return TransformerEncoderModel(V, V, nhead=m.nhead, num_layers=m.layers, dim_feedforward=ff,
                                        max_len=cfg.data.max_len, tie_weights=True, **kw)
    if objective == "causal":
        return GPT(V, cfg.data.max_len, n_heads=m.nhead, n_layers=m.layers, dim_feedforward=ff, **kw)
    return Seq2SeqTransformer(V, V, nhead=m.nhead, num_encoder_layers=m.layers, num_decoder_layers=m.layers,
                              dim_feedforward=ff, max_len=cfg.data.max_len * 2, **kw)


def _features_fn(objective: str, model):
    """Frozen per-token features the probe reads: the encoder's (the decoder's final states for GPT)."""
    return model.features if objective in ("mlm", "causal") else (lambda x: model.encode(x)[0])


def _probe(features_fn, ids: torch.Tensor, labels, val_ids, val_labels, probe: ProbeConfig, chunk: int = 256,
           pad_id: int = 0) -> float:
    """Accuracy of a logistic-regression probe on frozen mean-pooled features."""
    from sklearn.linear_model import LogisticRegression

    def feats(x):
        out = []
        with torch.no_grad():
            for part in x.split(chunk):
                part = trim_padding(part, pad_id)
                h = features_fn(part)
                m = (part != pad_id).float()[..., None]
                out.append((h * m).sum(1) / m.sum(1).clamp_min(1))
        return torch.cat(out).numpy()

    clf = LogisticRegression(max_iter=probe.max_iter, C=probe.C)
    clf.fit(feats(ids), labels.numpy())
    return float((clf.predict(feats(val_ids)) == val_labels.numpy()).mean())


@recipe("pretrain-objectives", "one corpus, three objectives: encoder-only masked LM, decoder-only causal LM, "
        "encoder-decoder span corruption; per-objective loss and a frozen-feature probe", PretrainConfig,
        target="each objective's probe accuracy beats the random-init encoder", main_metric="mlm_probe_accuracy",
        smoke={"data.subset": 100, "data.vocab_size": 300, "data.max_len": 24, "model.d_model": 16,
               "model.layers": 1, "model.nhead": 2, "mlm.train.epochs": 1, "causal.train.epochs": 1,
               "span.train.epochs": 1})
class PretrainObjectives(Parts):
    def data(self, cfg: PretrainConfig, seed: int) -> Bundle:
        vocab, (tr_ids, tr_y), (va_ids, va_y) = pretrain_corpus(cfg)
        V, mask_id = len(vocab), vocab.index["<mask>"]
        sentinels = [vocab.index[f"<extra_{i}>"] for i in range(cfg.data.sentinels)]
        collates = {
            "mlm": lambda x, g: mlm_collate(x, g, mask_id=mask_id, vocab_size=V, p=cfg.mlm.mask_prob),
            "causal": lambda x, g: causal_collate(x),
            "span": lambda x, g: span_corruption_collate(
                x, g, sentinel_ids=sentinels, eos_id=vocab.eos_id, bos_id=vocab.bos_id,
                noise_density=cfg.span.noise_density, mean_span=cfg.span.mean_span),
        }
        loaders = {}
        for objective in cfg.objectives:
            bs = _objective_part(cfg, objective).train.batch_size
            collate = collates[objective]
            loaders[objective] = (
                CollatingLoader(TensorLoader((tr_ids,), bs, shuffle=True, seed=seed), collate, seed=seed),
                CollatingLoader(TensorLoader((va_ids,), cfg.eval_batch_size), collate, seed=seed + 1))
        return Bundle(info={"vocab": vocab.tokens, "classes": list(PROBE_CLASSES), "init_seed": seed},
                      extra={"loaders": loaders, "probe": (tr_ids, tr_y, va_ids, va_y)})

    def stages(self, cfg: PretrainConfig, info: dict, upstream: dict) -> list[Stage]:
        V, seed = len(info_tokens(info, "vocab")), info_int(info, "init_seed")

        def stage(objective):
            def build(trained):
                torch.manual_seed(seed)                 # every objective starts from the same RNG state
                return TokenPrediction(build_pretrain_model(cfg, objective, V),
                                       _objective_part(cfg, objective).train.optim)

            return Stage(objective, build, _objective_part(cfg, objective).train,
                         loaders=lambda b: b.extra["loaders"][objective])

        return [stage(o) for o in cfg.objectives]

    def evaluate(self, cfg: PretrainConfig, run, data: Bundle) -> dict:
        tr_ids, tr_y, va_ids, va_y = data.extra["probe"]
        V = len(info_tokens(run.info, "vocab"))
        run.say(f"pretraining corpus: {len(tr_ids)} train / {len(va_ids)} val fortunes, vocabulary {V}")
        with torch.random.fork_rng():
            torch.manual_seed(info_int(run.info, "init_seed"))       # the MLM encoder before any training
            baseline = build_pretrain_model(cfg, "mlm", V)
        baseline.eval()
        chunk = cfg.eval_batch_size
        metrics = {"random_init_probe_accuracy": _probe(baseline.features, tr_ids, tr_y, va_ids, va_y, cfg.probe, chunk)}
        run.say(f"probe on a random-init encoder: {metrics['random_init_probe_accuracy']:.3f}")
        for objective in cfg.objectives:
            model = run.tasks[objective].model
            model.eval()
            history = run.history(objective)
            stage_curves(run, objective, objective, f"pretrain: {objective}")
            acc = _probe(_features_fn(objective, model), tr_ids, tr_y, va_ids, va_y, cfg.probe, chunk)
            epochs = [r for r in history if "time" in r]
            metrics[f"{objective}_val_loss"] = best_value(history, "val_loss")
            metrics[f"{objective}_val_accuracy"] = epochs[-1].get("val_accuracy") if epochs else None
            metrics[f"{objective}_probe_accuracy"] = acc
            loss = metrics[f"{objective}_val_loss"]
            run.say(f"{objective}: validation loss {loss if loss is None else round(loss, 4)} nats/target token, "
                    f"probe accuracy {acc:.3f}")
        plot_bars({k.removesuffix("_probe_accuracy"): v for k, v in metrics.items() if k.endswith("_probe_accuracy")},
                  run.plots / "probe_accuracy.png", "accuracy",
                  f"fortune-category probe on frozen features ({len(PROBE_CLASSES)} classes)")
        return metrics

