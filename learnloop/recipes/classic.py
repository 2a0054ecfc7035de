"""The first recipes: logistic and softmax regression, MLP and CNN classifiers, and the gradient-flow study.

All image classifiers share one config (`ClassifierConfig`: sections `data`, `model`, `train`) and one set
of parts (`ImageClassifier`); recipes differ only in defaults, so `learnloop run cnn-fashion --set
model.arch=mlp` is a valid experiment. `logreg-binary` and `gradient-flow` train several classifiers as
stages of one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnloop.data import TensorLoader, image_transform, load, stratified_split
from learnloop.data.augment import standard as augmentation
from learnloop.data.vision import ImageData
from learnloop.engine.callbacks import GradNormStats
from learnloop.engine.learner import Learner
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import UserError
from learnloop.metrics.classification import (
    confusion_matrix, per_sample_cross_entropy, precision_recall_f1, predictions,
)
from learnloop.models.classic import ACTIVATIONS, INITS, MLP, LinearClassifier, SmallCNN
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section, with_defaults
from learnloop.recipes.sections import DataConfig, TrainConfig
from learnloop.tasks.classification import Classification
from learnloop.utils.image_files import read_image_file, write_example_images
from learnloop.utils.plots import plot_bars, plot_confusion, plot_curves, plot_lines, plot_top_losses

DATASETS = ("fashion-mnist", "mnist", "digits")
AUGMENTS = ("none", "flip", "crop", "flip+crop", "affine", "randaugment")


@dataclass
class ImageDataConfig(DataConfig):
    dataset: str = param("fashion-mnist", "dataset to train on", choices=DATASETS)
    classes: tuple[int, ...] = param((), "keep only these class ids, at least two, distinct (empty: all)", min=0)
    augment: str = param("none", "batch augmentation policy for training", choices=AUGMENTS)


@dataclass
class ClassifierModelConfig:
    arch: str = param("mlp", "architecture", choices=("linear", "mlp", "cnn"))
    hidden: tuple[int, ...] = param((256, 128), "MLP hidden layer widths", min=1, max=65536)
    activation: str = param("relu", "MLP activation", choices=tuple(ACTIVATIONS))
    batchnorm: bool = param(True, "MLP BatchNorm after each hidden linear layer")
    dropout: float = param(0.2, "dropout probability", min=0.0, max=0.9)
    init: str = param("default", "weight initialisation", choices=INITS)


@dataclass
class ClassifierConfig:
    data: ImageDataConfig = section(ImageDataConfig, "data")
    model: ClassifierModelConfig = section(ClassifierModelConfig, "model")
    train: TrainConfig = section(TrainConfig, "training", schedule=ScheduleConfig(kind="one-cycle"))
    label_smoothing: float = param(0.0, "label smoothing epsilon", min=0.0, max=0.5)

    MOVED = {"model": "model.arch", "augment": "data.augment", "classes": "data.classes"}


@dataclass
class ClassifierData:
    train: ImageData
    val: ImageData
    test: ImageData
    mean: float
    std: float


def _check_classes(classes: tuple[int, ...], names: tuple[str, ...], dataset: str) -> None:
    if not classes:
        return
    if len(set(classes)) != len(classes):
        raise UserError(f"data.classes: {','.join(map(str, classes))} repeats a class; give distinct class ids")
    if len(classes) < 2:
        raise UserError("data.classes: a classifier needs at least two classes")
    bad = [c for c in classes if c >= len(names)]
    if bad:
        raise UserError(f"data.classes: {dataset} has classes 0..{len(names) - 1}, got {bad[0]}")


def load_classifier_data(data: ImageDataConfig, seed: int = 0) -> ClassifierData:
    path = data.path or None                # the registry refuses one that does not exist
    if data.dataset == "digits":
        full = load("digits", path)
        _check_classes(data.classes, full.classes, data.dataset)
        if data.classes:
            full = full.select_classes(list(data.classes))
        rest, test_idx = stratified_split(full.labels, data.test_fraction, seed=seed + 1)
        train_all, test = full.subset(rest), full.subset(test_idx)
    else:
        train_all, test = load(data.dataset, path, split="train"), load(data.dataset, path, split="test")
        _check_classes(data.classes, train_all.classes, data.dataset)
        if data.classes:
            train_all, test = train_all.select_classes(list(data.classes)), test.select_classes(list(data.classes))
    if data.val_fraction <= 0:
        raise UserError("data.val_fraction: image classifiers need a validation split (> 0)")
    tr, va = stratified_split(train_all.labels, data.val_fraction, seed=seed)
    train, val = train_all.subset(tr), train_all.subset(va)
    if 0 < data.subset < len(train):
        keep, _ = stratified_split(train.labels, 1 - data.subset / len(train), seed=seed)
        train = train.subset(keep)
    if len(train) == 0 or len(val) == 0 or len(test) == 0:
        raise UserError(f"{data.dataset}: the split leaves {len(train)} training, {len(val)} validation and "
                        f"{len(test)} test images; use more data or other fractions")
    pixels = train.images.float() / 255
    return ClassifierData(train, val, test, float(pixels.mean()), float(pixels.std()))


def classifier_info(d: ClassifierData) -> dict:
    return {"shape": list(d.train.shape), "classes": list(d.train.classes), "mean": d.mean, "std": d.std}


def build_model(model: ClassifierModelConfig, info: dict) -> torch.nn.Module:
    c, h, w = info["shape"]
    n = len(info["classes"])
    outputs = 1 if n == 2 and model.arch == "linear" else n       # binary logistic regression: one logit
    if model.arch == "linear":
        return LinearClassifier(c * h * w, outputs)
    if model.arch == "mlp":
        return MLP(c * h * w, outputs, model.hidden, model.activation, model.batchnorm, model.dropout, model.init)
    if h != w or h % 4:
        raise UserError(f"the cnn model needs square images with a side divisible by 4, got {h}x{w}")
    return SmallCNN(c, outputs, dropout=model.dropout, image_size=h)


def make_task(cfg, info: dict) -> Classification:
    return Classification(build_model(cfg.model, info), len(info["classes"]), cfg.train.optim,
                          label_smoothing=cfg.label_smoothing)


def classifier_bundle(data: ImageDataConfig, batch_size: int, seed: int) -> Bundle:
    d = load_classifier_data(data, seed)
    plain = image_transform(d.mean, d.std)
    train_tf = image_transform(d.mean, d.std, augmentation(data.augment))

    def make(part, shuffle, tf, bs):
        return TensorLoader((part.images, part.labels), batch_size=bs, shuffle=shuffle, seed=seed, transform=tf)

    return Bundle(make(d.train, True, train_tf, batch_size), make(d.val, False, plain, 1024),
                  make(d.test, False, plain, 1024), classifier_info(d), extra={"images": d})


def evaluate_classifier(task: Classification, bundle: Bundle, run, history: list[dict], prefix: str = "") -> dict:
    """Test metrics of the (best) weights in `task`, plus confusion-matrix, top-losses and curve plots."""
    learner = Learner(task)
    test = bundle.extra["images"].test
    logits = learner.predict(bundle.test)
    y = test.labels
    n = max(task.num_classes, 2)
    confusion = confusion_matrix(predictions(logits), y, n)
    metrics = {"test_loss": float(task.loss_fn(logits, y)),
               "test_macro_f1": float(precision_recall_f1(confusion)["macro_f1"]),
               **{f"test_{k}": float(f(logits, y)) for k, f in task.metrics.items()}}
    metrics.update(learner.validate(bundle.val, "val"))
    tag = f"{prefix}_" if prefix else ""
    plot_confusion(confusion[: len(test.classes), : len(test.classes)], test.classes,
                   run.plots / f"{tag}confusion_matrix.png")
    plot_top_losses(test.images, per_sample_cross_entropy(logits, y), predictions(logits), test.labels,
                    test.classes, run.plots / f"{tag}top_losses.png")
    epochs = [r for r in history if "epoch" in r and "val_loss" in r]
    if epochs:
        plot_curves(epochs, run.plots / f"{tag}curves.png", title=prefix or run.path.parent.name)
        metrics["epochs_trained"] = max(r["epoch"] for r in epochs)
        metrics["best_val_loss"] = min(r["val_loss"] for r in epochs)
    return {f"{tag}{k}": v for k, v in metrics.items()}


class ImagePredictor(Predictor):
    """Image files -> class probabilities, preprocessed as in training (grey, resized, normalised)."""

    inputs = "image files (PNG, JPEG, ...): light items on a dark background, like the training images"

    def __init__(self, task: Classification, info: dict, top: int = 3):
        self.task, self.info, self.top = task, info, top
        c, h, w = info["shape"]
        self.size, self.channels = (h, w), c
        self.transform = image_transform(info["mean"], info["std"])

    def examples(self, folder) -> list[str]:
        return write_example_images(folder, self.info["shape"])

    @torch.no_grad()
    def __call__(self, raw: list[str]) -> list[dict]:
        images = torch.stack([read_image_file(p, self.size, self.channels) for p in raw])
        (x,) = self.transform((images,))
        self.task.model.eval()
        logits = self.task.model(x)
        if logits.shape[1] == 1:                          # binary logistic regression: one logit
            p1 = torch.sigmoid(logits[:, 0])
            probs = torch.stack([1 - p1, p1], dim=1)
        else:
            probs = torch.softmax(logits, dim=1)
        classes = self.info["classes"]
        out = []
        for path, p in zip(raw, probs):
            top = torch.topk(p, min(self.top, len(classes)))
            out.append({"input": str(path), "class": classes[int(top.indices[0])],
                        "probability": round(float(top.values[0]), 4),
                        "top": [{"class": classes[int(i)], "probability": round(float(v), 4)}
                                for v, i in zip(top.values, top.indices)]})
        return out


class ImageClassifier(Parts):
    def data(self, cfg: ClassifierConfig, seed: int) -> Bundle:
        return classifier_bundle(cfg.data, cfg.train.batch_size, seed)

    def build(self, cfg: ClassifierConfig, info: dict) -> Classification:
        return make_task(cfg, info)

    def evaluate(self, cfg: ClassifierConfig, run, data: Bundle) -> dict:
        return evaluate_classifier(run.task, data, run, run.history(""))

    def predictor(self, run) -> Predictor:
        return ImagePredictor(run.task, run.info)


SMOKE = {"train.epochs": 1, "data.subset": 300}


def _classifier_recipe(name, summary, target, main_metric="test_accuracy", **defaults):
    config = with_defaults(ClassifierConfig, name.title().replace("-", "") + "Config", **defaults)
    recipe(name, summary, config, target=target, main_metric=main_metric, smoke=SMOKE)(ImageClassifier)


_classifier_recipe("mlp-digits", "MLP on scikit-learn's 8x8 digits (the quickstart; no downloads)",
                   "test_accuracy >= 0.95", data=dict(dataset="digits"), model=dict(hidden=(128,), dropout=0.1),
                   train=dict(epochs=30, batch_size=64, optim=dict(lr=3e-3, weight_decay=1e-4)))
_classifier_recipe("softmax-regression", "softmax regression on 10 Fashion-MNIST classes",
                   "test_accuracy >= 0.84", model=dict(arch="linear", dropout=0.0),
                   train=dict(epochs=10, batch_size=256, optim=dict(lr=2e-3)))
_classifier_recipe("mlp-fashion", "MLP with BatchNorm, Dropout and weight decay on Fashion-MNIST",
                   "test_accuracy >= 0.895", model=dict(hidden=(512, 256), dropout=0.3), label_smoothing=0.05,
                   train=dict(epochs=30, batch_size=256, optim=dict(lr=2e-3, weight_decay=0.05)))
_classifier_recipe("cnn-fashion", "small CNN (2 conv blocks) on Fashion-MNIST", "test_accuracy >= 0.92",
                   model=dict(arch="cnn", dropout=0.3), data=dict(augment="flip"),
                   train=dict(epochs=15, batch_size=128, optim=dict(lr=3e-3, weight_decay=0.05)))


# --- logistic regression: two binary problems, one stage each ----------------------------------------------
BINARY_PROBLEMS = {
    "digits-0v1": dict(dataset="digits", classes=(0, 1), lr=0.05),                  # 290 images: larger steps
    "fashion-tshirt-v-trouser": dict(dataset="fashion-mnist", classes=(0, 1), lr=0.005),  # 10.8k images
}


@dataclass
class LogRegConfig:
    problems: tuple[str, ...] = param(tuple(BINARY_PROBLEMS), "binary problems to solve",
                                      choices=tuple(BINARY_PROBLEMS))
    data: DataConfig = section(DataConfig, "data (the dataset is each problem's own)")
    train: TrainConfig = section(TrainConfig, "training (optim.lr 0: each problem's tuned default)",
                                 batch_size=64, optim=OptimConfig(lr=0.0, weight_decay=1e-4),
                                 schedule=ScheduleConfig(kind="one-cycle"))


def _problem_config(cfg: LogRegConfig, problem: str) -> ClassifierConfig:
    spec = BINARY_PROBLEMS[problem]
    lr = cfg.train.optim.lr or spec["lr"]
    data = ImageDataConfig(dataset=spec["dataset"], classes=spec["classes"], path=cfg.data.path,
                           subset=cfg.data.subset, val_fraction=cfg.data.val_fraction,
                           test_fraction=cfg.data.test_fraction)
    train = apply_train(cfg.train, lr)
    return ClassifierConfig(data=data, model=ClassifierModelConfig(arch="linear", dropout=0.0), train=train)


def apply_train(train: TrainConfig, lr: float) -> TrainConfig:
    from dataclasses import replace

    return replace(train, optim=replace(train.optim, lr=lr))


@recipe("logreg-binary", "logistic regression: digits 0 vs 1 (8x8) and T-shirt vs trouser", LogRegConfig,
        target="test_accuracy >= 0.97 on both problems", main_metric="test_accuracy", smoke=SMOKE)
class BinaryProblems(Parts):
    def data(self, cfg: LogRegConfig, seed: int) -> Bundle:
        bundles = {p: classifier_bundle(_problem_config(cfg, p).data, cfg.train.batch_size, seed)
                   for p in cfg.problems}
        return Bundle(info={p: b.info for p, b in bundles.items()}, extra=bundles)

    def stages(self, cfg: LogRegConfig, info: dict, upstream: dict) -> list[Stage]:
        return [self._stage(cfg, info, p) for p in cfg.problems]

    @staticmethod
    def _stage(cfg: LogRegConfig, info: dict, problem: str) -> Stage:
        pcfg = _problem_config(cfg, problem)
        return Stage(problem, lambda trained: make_task(pcfg, info[problem]), pcfg.train,
                     loaders=lambda b: (b.extra[problem].train, b.extra[problem].val))

    def evaluate(self, cfg: LogRegConfig, run, data: Bundle) -> dict:
        metrics = {}
        for p in cfg.problems:
            metrics.update(evaluate_classifier(run.tasks[p], data.extra[p], run, run.history(p), prefix=p))
        metrics["test_accuracy"] = min(metrics[f"{p}_test_accuracy"] for p in cfg.problems)
        return metrics

    def predictor(self, run) -> Predictor:
        last = list(run.tasks)[-1]
        return ImagePredictor(run.tasks[last], run.info[last])


# --- gradient flow: one stage per (activation, initialisation) ---------------------------------------------
@dataclass
class GradientFlowConfig:
    depth: int = param(10, "hidden layers in the deep MLP", min=2, max=50)
    width: int = param(128, "units per hidden layer", min=4, max=4096)
    activations: tuple[str, ...] = param(("sigmoid", "relu"), "activations to compare", choices=tuple(ACTIVATIONS))
    inits: tuple[str, ...] = param(("normal", "xavier", "kaiming"), "initialisations to compare", choices=INITS)
    data: ImageDataConfig = section(ImageDataConfig, "data", subset=10000)
    train: TrainConfig = section(TrainConfig, "training of every configuration", epochs=3,
                                 optim=OptimConfig(name="sgd", lr=0.01, momentum=0.9))
    grad_every: int = param(5, "record per-layer gradient norms every this many steps", min=1)


def _flow_tags(cfg: GradientFlowConfig) -> list[tuple[str, str, str]]:
    return [(f"{a}_{i}", a, i) for a in cfg.activations for i in cfg.inits]


def _flow_config(cfg: GradientFlowConfig, act: str, init: str) -> ClassifierConfig:
    model = ClassifierModelConfig(arch="mlp", hidden=(cfg.width,) * cfg.depth, activation=act, init=init,
                                  batchnorm=False, dropout=0.0)
    return ClassifierConfig(data=cfg.data, model=model, train=cfg.train)


@recipe("gradient-flow", "vanishing/exploding gradients: sigmoid vs ReLU x N(0,1) vs Xavier vs Kaiming init",
        GradientFlowConfig, target="sigmoid+xavier vanishes (input/output grad ratio < 1e-2), relu+N(0,1) "
        "explodes, relu+kaiming learns best", main_metric="relu_kaiming_test_accuracy",
        smoke={"train.epochs": 1, "data.subset": 300, "depth": 3, "inits": "xavier"})
class GradientFlow(Parts):
    def data(self, cfg: GradientFlowConfig, seed: int) -> Bundle:
        return classifier_bundle(cfg.data, cfg.train.batch_size, seed)

    def stages(self, cfg: GradientFlowConfig, info: dict, upstream: dict) -> list[Stage]:
        def build(act, init):
            return lambda trained: make_task(_flow_config(cfg, act, init), info)

        return [Stage(tag, build(act, init), cfg.train, may_diverge=True,
                      callbacks=lambda task: [GradNormStats(every=cfg.grad_every)])
                for tag, act, init in _flow_tags(cfg)]

    def evaluate(self, cfg: GradientFlowConfig, run, data: Bundle) -> dict:
        metrics, curves = {}, {}
        for tag, _, _ in _flow_tags(cfg):
            diverged = tag in run.diverged or any(r.get("diverged") for r in run.history(tag))
            acc = float("nan") if diverged else Learner(run.tasks[tag]).validate(data.test, "test")["test_accuracy"]
            metrics[f"{tag}_diverged"] = int(diverged)
            records = run.callback_state(tag, "grad_norms").get("records", [])
            first_epoch = [r for r in records if r["epoch"] == 0] or records
            layers = list(first_epoch[0]["norms"]) if first_epoch else []
            mean = [sum(r["norms"][k] for r in first_epoch) / len(first_epoch) for k in layers]
            curves[tag] = (list(range(1, len(layers) + 1)), mean)
            metrics[f"{tag}_test_accuracy"] = acc
            if mean:
                metrics[f"{tag}_grad_ratio_first_last"] = mean[0] / max(mean[-1], 1e-30)
                metrics[f"{tag}_grad_norm_input_layer"] = mean[0]
        plot_lines(curves, run.plots / "gradient_norms_per_layer.png", "layer (1 = input side)",
                   "mean gradient L2 norm (first epoch)", "gradient flow through a deep MLP", logy=True)
        accs = {k.removesuffix("_test_accuracy"): v for k, v in metrics.items() if k.endswith("_test_accuracy")}
        plot_bars(accs, run.plots / "accuracy_by_config.png", "test accuracy", "accuracy reached per configuration")
        return metrics
