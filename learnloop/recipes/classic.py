"""The first recipes: logistic and softmax regression, MLP and CNN classifiers, and the gradient-flow study.

All image classifiers share one config (`ClassifierConfig`) and one training function; recipes differ
only in defaults, so `learnloop run cnn-fashion --set model=mlp` is a valid experiment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnloop.data import TensorLoader, image_transform, load, stratified_split
from learnloop.data.augment import standard as augmentation
from learnloop.data.vision import ImageData
from learnloop.engine.callbacks import GradNormStats
from learnloop.engine.checkpoint import load_state
from learnloop.engine.learner import Learner
from learnloop.engine.schedules import KINDS, ScheduleConfig
from learnloop.errors import UserError
from learnloop.metrics.classification import (
    confusion_matrix, per_sample_cross_entropy, precision_recall_f1, predictions,
)
from learnloop.models.classic import ACTIVATIONS, INITS, MLP, LinearClassifier, SmallCNN
from learnloop.recipes.base import RunContext, attach, recipe
from learnloop.recipes.config import param, with_defaults
from learnloop.tasks.classification import Classification
from learnloop.utils.plots import plot_bars, plot_confusion, plot_curves, plot_lines, plot_top_losses

DATASETS = ("fashion-mnist", "mnist", "digits")


@dataclass
class ClassifierConfig:
    dataset: str = param("fashion-mnist", "dataset to train on", choices=DATASETS)
    data_path: str = param("", "folder with the dataset's files (default: the standard search order)")
    classes: tuple[int, ...] = param((), "keep only these class ids (empty: all)", min=0)
    train_subset: int = param(0, "use only this many training images (0: all)", min=0)
    val_fraction: float = param(0.1, "fraction of training data held out for validation", min=0.01, max=0.5)
    test_fraction: float = param(0.2, "test fraction for datasets without a test split (digits)", min=0.05, max=0.5)
    model: str = param("mlp", "architecture", choices=("linear", "mlp", "cnn"))
    hidden: tuple[int, ...] = param((256, 128), "MLP hidden layer widths", min=1)
    activation: str = param("relu", "MLP activation", choices=tuple(ACTIVATIONS))
    batchnorm: bool = param(True, "MLP BatchNorm after each hidden linear layer")
    dropout: float = param(0.2, "dropout probability", min=0.0, max=0.9)
    init: str = param("default", "weight initialisation", choices=INITS)
    epochs: int = param(10, "training epochs", min=1)
    batch_size: int = param(128, "batch size", min=1)
    optimizer: str = param("adamw", "optimizer", choices=("sgd", "adam", "adamw"))
    lr: float = param(1e-3, "peak learning rate", min=0.0)
    weight_decay: float = param(0.0, "decoupled weight decay on weight matrices", min=0.0)
    momentum: float = param(0.9, "SGD momentum", min=0.0, max=1.0)
    schedule: str = param("one-cycle", "learning-rate schedule", choices=KINDS)
    label_smoothing: float = param(0.0, "label smoothing epsilon", min=0.0, max=0.5)
    augment: str = param("none", "batch augmentation policy",
                         choices=("none", "flip", "crop", "flip+crop", "affine", "randaugment"))
    accumulate: int = param(1, "micro-batches per optimizer step (gradient accumulation)", min=1)
    clip_grad_norm: float = param(0.0, "clip the global gradient norm to this (0: off)", min=0.0)
    precision: str = param("32", "32 or bf16 autocast (16 needs CUDA)", choices=("32", "bf16", "16"))
    patience: int = param(0, "early-stopping patience in epochs on val_loss (0: off)", min=0)


@dataclass
class ClassifierData:
    train: ImageData
    val: ImageData
    test: ImageData
    mean: float
    std: float


def load_classifier_data(cfg: ClassifierConfig, seed: int = 0) -> ClassifierData:
    path = cfg.data_path or None
    if cfg.dataset == "digits":
        full = load("digits", path)
        if cfg.classes:
            full = full.select_classes(list(cfg.classes))
        rest, test_idx = stratified_split(full.labels, cfg.test_fraction, seed=seed + 1)
        train_all, test = full.subset(rest), full.subset(test_idx)
    else:
        train_all, test = load(cfg.dataset, path, split="train"), load(cfg.dataset, path, split="test")
        if cfg.classes:
            train_all, test = train_all.select_classes(list(cfg.classes)), test.select_classes(list(cfg.classes))
    if cfg.classes and len(train_all) == 0:
        raise UserError(f"classes {cfg.classes} select no images from {cfg.dataset}")
    tr, va = stratified_split(train_all.labels, cfg.val_fraction, seed=seed)
    train, val = train_all.subset(tr), train_all.subset(va)
    if 0 < cfg.train_subset < len(train):
        keep, _ = stratified_split(train.labels, 1 - cfg.train_subset / len(train), seed=seed)
        train = train.subset(keep)
    pixels = train.images.float() / 255
    return ClassifierData(train, val, test, float(pixels.mean()), float(pixels.std()))


def build_model(cfg: ClassifierConfig, data: ImageData) -> torch.nn.Module:
    c, h, w = data.shape
    n = len(data.classes)
    outputs = 1 if n == 2 and cfg.model == "linear" else n       # binary logistic regression: one logit
    if cfg.model == "linear":
        return LinearClassifier(c * h * w, outputs)
    if cfg.model == "mlp":
        return MLP(c * h * w, outputs, cfg.hidden, cfg.activation, cfg.batchnorm, cfg.dropout, cfg.init)
    if h != w or h % 4:
        raise UserError(f"the cnn model needs square images with a side divisible by 4, got {h}x{w}")
    return SmallCNN(c, outputs, dropout=cfg.dropout, image_size=h)


def loaders(cfg: ClassifierConfig, data: ClassifierData, seed: int):
    plain = image_transform(data.mean, data.std)
    train_tf = image_transform(data.mean, data.std, augmentation(cfg.augment))

    def make(d, shuffle, tf, bs):
        return TensorLoader((d.images, d.labels), batch_size=bs, shuffle=shuffle, seed=seed, transform=tf)

    return (make(data.train, True, train_tf, cfg.batch_size), make(data.val, False, plain, 1024),
            make(data.test, False, plain, 1024))


def make_task(cfg: ClassifierConfig, model, num_classes: int) -> Classification:
    return Classification(model, num_classes, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum,
                          label_smoothing=cfg.label_smoothing)


def _learner(cfg, ctx: RunContext | None, task, train, val, name="", callbacks=()) -> Learner:
    schedule = ScheduleConfig(kind=cfg.schedule)
    kw = dict(epochs=cfg.epochs, schedule=schedule, accumulate=cfg.accumulate, clip_grad_norm=cfg.clip_grad_norm,
              precision=cfg.precision, monitor="val_loss", mode="min")
    if ctx is None:
        return Learner(task, train, val, **kw)
    return ctx.learner(task, train, val, name=name, patience=cfg.patience, callbacks=callbacks, **kw)


def evaluate_classifier(learner: Learner, test_loader, test: ImageData, ctx: RunContext, prefix: str = "") -> dict:
    """Test metrics of the best checkpoint, plus confusion-matrix, top-losses and curve plots."""
    best = learner.checkpoint_path("best")
    if best is not None and best.exists():
        learner.task.model.load_state_dict(load_state(best)["modules"]["model"])
    task = learner.task
    logits = learner.predict(test_loader)
    y = test.labels
    n = max(task.num_classes, 2)
    confusion = confusion_matrix(predictions(logits), y, n)
    metrics = {"test_loss": float(task.loss_fn(logits, y)), "test_macro_f1": float(precision_recall_f1(confusion)["macro_f1"]),
               **{f"test_{k}": float(f(logits, y)) for k, f in task.metrics.items()}}
    losses = per_sample_cross_entropy(logits, y)
    tag = f"{prefix}_" if prefix else ""
    plot_confusion(confusion[: len(test.classes), : len(test.classes)], test.classes,
                   ctx.run.plots / f"{tag}confusion_matrix.png")
    plot_top_losses(test.images, losses, predictions(logits), test.labels, test.classes,
                    ctx.run.plots / f"{tag}top_losses.png")
    if learner.history:
        plot_curves(learner.history, ctx.run.plots / f"{tag}curves.png", title=prefix or ctx.run.path.parent.name)
    return {f"{tag}{k}": v for k, v in metrics.items()}


def train_classifier(cfg: ClassifierConfig, ctx: RunContext, prefix: str = "") -> dict:
    data = load_classifier_data(cfg, ctx.seed)
    ctx.say(f"{cfg.dataset}{' ' + prefix if prefix else ''}: {len(data.train)} train / {len(data.val)} val / "
            f"{len(data.test)} test images, {len(data.train.classes)} classes")
    model = build_model(cfg, data.train)
    task = make_task(cfg, model, len(data.train.classes))
    train, val, test = loaders(cfg, data, ctx.seed)
    learner = _learner(cfg, ctx, task, train, val, name=prefix)
    ctx.fit(learner)
    ctx.outputs["model"] = model
    metrics = evaluate_classifier(learner, test, data.test, ctx, prefix)
    tag = f"{prefix}_" if prefix else ""
    metrics[f"{tag}epochs_trained"] = learner.epoch
    metrics[f"{tag}best_val_loss"] = learner.best
    return metrics


def evaluate_recipe(cfg: ClassifierConfig, ctx: RunContext) -> dict:
    data = load_classifier_data(cfg, ctx.seed)
    model = build_model(cfg, data.train)
    task = make_task(cfg, model, len(data.train.classes))
    _, val, test = loaders(cfg, data, ctx.seed)
    learner = Learner(task, None, None, run=ctx.run)
    if not learner.checkpoint_path("best").exists():
        raise UserError(f"{ctx.run.path}: no checkpoint to evaluate (checkpoints/best.safetensors)")
    learner.history = ctx.run.history()
    metrics = evaluate_classifier(learner, test, data.test, ctx)
    metrics.update(learner.validate(val, "val"))
    return metrics


def build_for_lr_find(cfg: ClassifierConfig) -> Learner:
    data = load_classifier_data(cfg)
    model = build_model(cfg, data.train)
    train, val, _ = loaders(cfg, data, 0)
    return _learner(cfg, None, make_task(cfg, model, len(data.train.classes)), train, val)


def _classifier_recipe(name, summary, target, main_metric="test_accuracy", **defaults):
    config = with_defaults(ClassifierConfig, name.title().replace("-", "") + "Config", **defaults)
    recipe(name, summary, config, family="classic", target=target, main_metric=main_metric,
           benchmark=f"learnloop run {name}")(train_classifier)
    attach(name, evaluate=evaluate_recipe, build=build_for_lr_find)


_classifier_recipe("mlp-digits", "MLP on scikit-learn's 8x8 digits (the quickstart; no downloads)",
                   "test_accuracy >= 0.95", dataset="digits", hidden=(128,), epochs=30, batch_size=64,
                   lr=3e-3, dropout=0.1, weight_decay=1e-4)
_classifier_recipe("softmax-regression", "softmax regression on 10 Fashion-MNIST classes",
                   "test_accuracy >= 0.84", model="linear", epochs=10, lr=2e-3, dropout=0.0, batch_size=256)
_classifier_recipe("mlp-fashion", "MLP with BatchNorm, Dropout and weight decay on Fashion-MNIST",
                   "test_accuracy >= 0.895", hidden=(512, 256), dropout=0.3, weight_decay=0.05, epochs=30,
                   lr=2e-3, batch_size=256, label_smoothing=0.05)
_classifier_recipe("cnn-fashion", "small CNN (2 conv blocks) on Fashion-MNIST", "test_accuracy >= 0.92",
                   model="cnn", dropout=0.3, weight_decay=0.05, epochs=15, lr=3e-3, batch_size=128,
                   augment="flip")


# --- logistic regression: two binary problems ------------------------------------------------------------
BINARY_PROBLEMS = {
    "digits-0v1": dict(dataset="digits", classes=(0, 1), lr=0.05),                  # 290 images: larger steps
    "fashion-tshirt-v-trouser": dict(dataset="fashion-mnist", classes=(0, 1), lr=0.005),  # 10.8k images
}


@dataclass
class LogRegConfig:
    problems: tuple[str, ...] = param(tuple(BINARY_PROBLEMS), "binary problems to solve",
                                      choices=tuple(BINARY_PROBLEMS))
    epochs: int = param(10, "training epochs", min=1)
    lr: float = param(0.0, "learning rate (0: each problem's tuned default)", min=0.0)
    weight_decay: float = param(1e-4, "L2 penalty on the weights", min=0.0)
    batch_size: int = param(64, "batch size", min=1)


@recipe("logreg-binary", "logistic regression: digits 0 vs 1 (8x8) and T-shirt vs trouser", LogRegConfig,
        target="test_accuracy >= 0.97 on both problems", main_metric="test_accuracy")
def logreg_binary(cfg: LogRegConfig, ctx: RunContext) -> dict:
    metrics = {}
    for problem in cfg.problems:
        settings = {**BINARY_PROBLEMS[problem], **({"lr": cfg.lr} if cfg.lr else {})}
        ccfg = ClassifierConfig(model="linear", epochs=cfg.epochs, weight_decay=cfg.weight_decay,
                                batch_size=cfg.batch_size, dropout=0.0, **settings)
        metrics.update(train_classifier(ccfg, ctx, prefix=problem))
    metrics["test_accuracy"] = min(metrics[f"{p}_test_accuracy"] for p in cfg.problems)
    return metrics


# --- gradient flow -------------------------------------------------------------------------------------
@dataclass
class GradientFlowConfig:
    depth: int = param(10, "hidden layers in the deep MLP", min=2, max=50)
    width: int = param(128, "units per hidden layer", min=4)
    activations: tuple[str, ...] = param(("sigmoid", "relu"), "activations to compare", choices=tuple(ACTIVATIONS))
    inits: tuple[str, ...] = param(("normal", "xavier", "kaiming"), "initialisations to compare", choices=INITS)
    train_subset: int = param(10000, "training images", min=100)
    epochs: int = param(3, "epochs per configuration", min=1)
    lr: float = param(0.01, "SGD learning rate", min=0.0)
    batch_size: int = param(128, "batch size", min=1)
    dataset: str = param("fashion-mnist", "dataset", choices=DATASETS)


@recipe("gradient-flow", "vanishing/exploding gradients: sigmoid vs ReLU x N(0,1) vs Xavier vs Kaiming init",
        GradientFlowConfig, target="sigmoid+xavier vanishes (input/output grad ratio < 1e-2), relu+N(0,1) explodes, relu+kaiming learns best",
        main_metric="relu_kaiming_test_accuracy")
def gradient_flow(cfg: GradientFlowConfig, ctx: RunContext) -> dict:
    metrics, curves = {}, {}
    for act in cfg.activations:
        for init in cfg.inits:
            tag = f"{act}_{init}"
            ccfg = ClassifierConfig(dataset=cfg.dataset, model="mlp", hidden=(cfg.width,) * cfg.depth,
                                    activation=act, init=init, batchnorm=False, dropout=0.0, epochs=cfg.epochs,
                                    lr=cfg.lr, optimizer="sgd", momentum=0.9, schedule="constant",
                                    batch_size=cfg.batch_size, train_subset=cfg.train_subset, clip_grad_norm=0.0)
            data = load_classifier_data(ccfg, ctx.seed)
            model = build_model(ccfg, data.train)
            task = make_task(ccfg, model, len(data.train.classes))
            train, val, test = loaders(ccfg, data, ctx.seed)
            stats = GradNormStats(every=5)
            learner = _learner(ccfg, ctx, task, train, val, name=tag, callbacks=[stats])
            ctx.say(f"gradient-flow: {tag}")
            try:
                ctx.fit(learner)
                acc = learner.validate(test, "test")["test_accuracy"]
            except Exception as e:  # noqa: BLE001 - a diverging configuration is a result here, not a crash
                from learnloop.errors import TrainingDiverged

                if not isinstance(e, TrainingDiverged):
                    raise
                acc = float("nan")
                ctx.say(f"  {tag} diverged: {e}")
            metrics[f"{tag}_diverged"] = int(acc != acc)
            first_epoch = [r for r in stats.records if r["epoch"] == 0] or stats.records
            layers = list(first_epoch[0]["norms"]) if first_epoch else []
            mean = [sum(r["norms"][k] for r in first_epoch) / len(first_epoch) for k in layers]
            curves[tag] = (list(range(1, len(layers) + 1)), mean)
            metrics[f"{tag}_test_accuracy"] = acc
            if mean:
                metrics[f"{tag}_grad_ratio_first_last"] = mean[0] / max(mean[-1], 1e-30)
                metrics[f"{tag}_grad_norm_input_layer"] = mean[0]
    plot_lines(curves, ctx.run.plots / "gradient_norms_per_layer.png", "layer (1 = input side)",
               "mean gradient L2 norm (first epoch)", "gradient flow through a deep MLP", logy=True)
    accs = {k.removesuffix("_test_accuracy"): v for k, v in metrics.items() if k.endswith("_test_accuracy")}
    plot_bars(accs, ctx.run.plots / "accuracy_by_config.png", "test accuracy", "accuracy reached per configuration")
    return metrics
