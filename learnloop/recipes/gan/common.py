"""What every GAN recipe and study shares: `GanConfig` (architecture, loss, regularizer, normalisation and
the two players' optimizers as choices), the training images, the game as an AdversarialTask (stage "gan",
checkpoints/gan/) with its callbacks and per-epoch FID, the sampling generator of a checkpoint, and the
evaluation of the `best` and `last` checkpoints.

The EMA of G's weights, the per-epoch sample grid of a fixed noise batch and weight clipping are engine
callbacks (learnloop.engine.ema.EMA, learnloop.engine.callbacks.SampleGrid / WeightClipping). During
training a cheap FID (`monitor_samples` samples, evaluator features) is logged per epoch and selects the
`best` checkpoint; the final evaluation reports the full metric set (learnloop.evaluation.generative) for
both `best` and `last`, so a GAN that diverged late is visible.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from learnloop.data.loader import RandomBatches
from learnloop.data.vision import ImageData, load_fashion_mnist
from learnloop.engine.callbacks import SampleGrid, WeightClipping
from learnloop.engine.ema import EMA
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import CorruptFileError, UserError
from learnloop.evaluation.generative import (
    FeatureConfig, GenerativeEvalConfig, evaluator_available, extractor_ready, load_extractor,
)
from learnloop.losses.adversarial import ADVERSARIAL_LOSSES
from learnloop.losses.regularizers import PENALTIES, REGULARIZERS
from learnloop.models.gan import ARCHITECTURES, D_NORMS, build_gan
from learnloop.recipes.base import Bundle, Stage
from learnloop.recipes.config import param, section
from learnloop.recipes.runs import load_modules
from learnloop.tasks.adversarial import AdversarialTask, generate, noise_gan
from learnloop.utils.images import save_image_grid, to_uint8
from learnloop.utils.plots import plot_curves

STAGE = "gan"                # checkpoints/gan/{best,last}.safetensors
GANS = ("gan-mlp", "dcgan", "wgan-clip", "wgan-gp", "sngan", "cgan")   # registered in train.py
EMA_NAME = "ema_generator"   # the EMA callback's name: its shadow weights are in checkpoints under callbacks/
SMOKE = {"train.epochs": 1, "train.steps_per_epoch": 4, "train.batch_size": 16, "monitor_samples": 200,
         "eval.samples": 200, "data.subset": 500}


# --- config --------------------------------------------------------------------------------------------------
@dataclass
class PlayerConfig:
    """One player's optimizer (`generator.optim.lr`, `discriminator.optim.name`, ...)."""

    optim: OptimConfig = section(OptimConfig, "optimizer", name="adam", lr=2e-4, betas=(0.5, 0.999))


@dataclass
class GanTrainConfig:
    """How the game is trained: `steps_per_epoch` batches per epoch, each one update of every player whose
    turn it is (no gradient accumulation: `accumulate` is always 1)."""

    epochs: int = param(30, "epochs (each `steps_per_epoch` batches)", min=1, max=100_000)
    steps_per_epoch: int = param(200, "batches per epoch (sampled without replacement, reshuffled per epoch)",
                                 min=1)
    batch_size: int = param(64, "batch size", min=2)
    schedule: ScheduleConfig = section(ScheduleConfig, "learning-rate schedule of both optimizers")
    clip_grad_norm: float = param(0.0, "clip each player's global gradient norm to this (0: off)", min=0.0)
    precision: str = param("32", "32 or bf16 autocast (16 needs CUDA)", choices=("32", "bf16", "16"))
    patience: int = param(0, "early stopping: epochs without a better per-epoch FID (0: off)", min=0)
    time_budget_min: float = param(0.0, "stop after the epoch in which training has used this many CPU minutes "
                                   "(process time of all threads, sampling and per-epoch FID included; 0: off)",
                                   min=0.0)
    accumulate = 1           # read by the Learner settings; a manual-optimisation task steps every batch


@dataclass
class GanDataConfig:
    dataset: str = param("fashion-mnist", "training images (the evaluator is Fashion-MNIST's)",
                         choices=("fashion-mnist",))
    path: str = param("", "folder with the dataset's files (default: the standard search order)")
    subset: int = param(0, "use only this many training images (0: all 60k)", min=0)


@dataclass
class GanConfig:
    arch: str = param("dcgan", "generator/discriminator architecture", choices=ARCHITECTURES)
    loss: str = param("non-saturating", "adversarial loss", choices=tuple(ADVERSARIAL_LOSSES))
    regularizer: str = param("none", "D regularizer: weight clipping, gradient penalty or R1",
                             choices=REGULARIZERS)
    reg_weight: float = param(10.0, "gradient-penalty lambda or R1 gamma", min=0.0)
    reg_every: int = param(1, "lazy regularization: apply gp/r1 (times this) every this many D updates", min=1)
    clip_value: float = param(0.01, "weight-clipping bound c", min=1e-6)
    spectral_norm: bool = param(False, "spectral normalisation on every D layer")
    d_norm: str = param("batch", "normalisation in D's hidden layers (batch is invalid with gp/r1)",
                        choices=D_NORMS)
    g_batchnorm: bool = param(True, "BatchNorm in G")
    conditional: bool = param(False, "class-conditional (one-hot concatenated to z and to D's input)")
    z_dim: int = param(64, "noise dimension", min=1)
    width: int = param(64, "DCGAN base channels w (G: 2w at 7x7, w at 14x14)", min=4)
    n_critic: int = param(1, "D updates per G update", min=1)
    ema_decay: float = param(0.999, "EMA of G's weights for sampling (0: off)", min=0.0, max=0.9999)
    collapse_patience: int = param(3, "stop when D wins this many epochs in a row", min=1)
    monitor_samples: int = param(2000, "samples for the per-epoch FID that picks the best checkpoint (0: off)",
                                 min=0)
    grid_samples: int = param(64, "samples in the per-epoch grid of a fixed noise batch", min=1, max=1024)
    generator: PlayerConfig = section(PlayerConfig, "the generator")
    discriminator: PlayerConfig = section(PlayerConfig, "the discriminator (critic)")
    train: GanTrainConfig = section(GanTrainConfig, "training")
    data: GanDataConfig = section(GanDataConfig, "data")
    eval: GenerativeEvalConfig = section(GenerativeEvalConfig, "evaluation of the best and last checkpoints "
                                         "(the extractor and reference also serve the per-epoch FID)")

    MOVED = {"lr_g": "generator.optim.lr", "lr_d": "discriminator.optim.lr", "beta1": "generator.optim.betas",
             "beta2": "generator.optim.betas", "optimizer": "generator.optim.name",
             "steps_per_epoch": "train.steps_per_epoch", "time_budget_min": "train.time_budget_min",
             "eval_samples": "eval.samples", "k": "eval.k"}


def check_config(cfg: GanConfig) -> None:
    if cfg.regularizer in PENALTIES and cfg.d_norm == "batch":
        raise UserError(f"regularizer={cfg.regularizer} needs per-sample input gradients: set d_norm=layer or none "
                        "(BatchNorm mixes the samples of a batch)")
    if cfg.regularizer == "clip" and cfg.spectral_norm:
        raise UserError("weight clipping and spectral norm both constrain D; choose one")
    if cfg.monitor_samples == 1:
        raise UserError("monitor_samples: the per-epoch FID needs at least 2 samples (0: off)")
    if cfg.eval.k >= cfg.eval.samples or cfg.eval.splits > cfg.eval.samples:
        raise UserError(f"eval: need k < samples and splits <= samples, got k={cfg.eval.k}, "
                        f"splits={cfg.eval.splits}, samples={cfg.eval.samples}")


# --- data ------------------------------------------------------------------------------------------------------
def seeded_subset(images: ImageData, n: int, seed: int) -> ImageData:
    """`n` images drawn without replacement with `seed` (all of them, in order, when n is 0 or >= their
    number)."""
    if 0 < n < len(images):
        images = images.subset(torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n])
    return images


def load_train_images(data: GanDataConfig, seed: int = 0) -> ImageData:
    return seeded_subset(load_fashion_mnist("train", data.path or None), data.subset, seed)


def image_info(images: ImageData, dataset: str) -> dict:
    return {"dataset": dataset, "shape": list(images.shape), "classes": list(images.classes)}


def gan_bundle(cfg: GanConfig, seed: int, train: bool = True) -> Bundle:
    """Training batches in [-1, 1] (none with `train=False`) and the info models are built from."""
    images = load_train_images(cfg.data, seed)
    loader = RandomBatches(images.images, images.labels, cfg.train.batch_size, cfg.train.steps_per_epoch, seed) \
        if train else None
    return Bundle(train=loader, info=image_info(images, cfg.data.dataset))


def num_classes(cfg: GanConfig, info: dict) -> int:
    return len(info["classes"]) if cfg.conditional else 0


def sample_images(generator: torch.nn.Module, n: int, z_dim: int, k: int = 0, **options) -> torch.Tensor:
    """`generate` (learnloop.tasks.adversarial) as uint8 images: G's outputs lie in [-1, 1]."""
    return to_uint8(generate(generator, n, z_dim, k, **options), (-1, 1))


# --- evaluator glue (learnloop.evaluation, learnloop.models.evaluator) ------------------------------------------
def require_evaluator(features: FeatureConfig) -> None:
    if not extractor_ready(features):
        raise UserError("this recipe needs the evaluator weights learnloop/assets/fashion_evaluator.safetensors; "
                        "run `python bench/train_evaluator.py` to create them")


def classifier(features: FeatureConfig, classes: list[str]):
    """The extractor of `features`, which must classify into the data's classes (a UserError otherwise)."""
    ex = load_extractor(features)
    if ex.num_classes != len(classes):
        raise UserError(f"extractor '{features.extractor}' has {ex.num_classes} classes, the data {len(classes)}; "
                        "a class-based measurement needs a classifier of the data's classes (eval.extractor=fashion)")
    return ex


class FIDMonitor:
    """images (uint8) -> {"fid": FID against the statistics of the whole reference split}, with the
    extractor of `features`; {} while the Fashion evaluator is not installed (the Learner then keeps the latest
    checkpoint as `best`). The Fashion evaluator is built afresh at the first call (the end of epoch 1), as
    before the recipe API changed: its initialisation's RNG draws belong to the training's random stream,
    so runs reproduce the recorded results and do not depend on what the process built before."""

    def __init__(self, features: FeatureConfig):
        self.features, self.extractor = features, None

    def __call__(self, images: torch.Tensor) -> dict:
        from learnloop.evaluation.extractors import FashionExtractor
        from learnloop.evaluation.generative import fid_to_reference
        from learnloop.models.evaluator import load_fashion_evaluator

        if self.extractor is None:
            if self.features.extractor == "fashion":
                if not evaluator_available():
                    return {}
                self.extractor = FashionExtractor(load_fashion_evaluator())
            else:
                with torch.random.fork_rng(devices=[]):
                    self.extractor = load_extractor(self.features)
        return {"fid": fid_to_reference(images, self.features.reference, self.extractor)}


# --- the task ----------------------------------------------------------------------------------------------------
def build_task(cfg: GanConfig, info: dict) -> AdversarialTask:
    """The game of `cfg` on images of info["shape"] (and info["classes"] when conditional), with its callbacks:
    EMA of G (`ema_decay`), the sample grid of a fixed noise batch, weight clipping (regularizer=clip)."""
    check_config(cfg)
    k = num_classes(cfg, info)
    g, d = build_gan(cfg.arch, cfg.z_dim, k, cfg.width, cfg.g_batchnorm, cfg.d_norm, cfg.spectral_norm,
                     image_shape=tuple(info["shape"]))
    ema = EMA("generator", cfg.ema_decay, optimizer="generator", warmup=True, name=EMA_NAME) \
        if cfg.ema_decay > 0 else None

    def sampler() -> torch.nn.Module:
        return ema.module if ema is not None else g

    def grid(learner) -> torch.Tensor:           # the same noise (seed 1234) and classes 0..K-1 every epoch
        return generate(sampler(), cfg.grid_samples, cfg.z_dim, k, seed=1234, batch_size=cfg.grid_samples)

    fid = FIDMonitor(cfg.eval)

    def monitor(learner) -> dict:
        return fid(sample_images(sampler(), cfg.monitor_samples, cfg.z_dim, k, seed=10_000 + learner.epoch))

    callbacks = [ema] if ema is not None else []
    callbacks.append(SampleGrid(grid, nrow=k or None, value_range=(-1.0, 1.0)))
    if cfg.regularizer == "clip":
        callbacks.append(WeightClipping("discriminator", cfg.clip_value, optimizer="discriminator"))
    return noise_gan(g, d, z_dim=cfg.z_dim, num_classes=k, loss=cfg.loss,
                     penalty=cfg.regularizer if cfg.regularizer in PENALTIES else "none",
                     penalty_weight=cfg.reg_weight, penalty_every=cfg.reg_every, n_critic=cfg.n_critic,
                     g_optim=cfg.generator.optim, d_optim=cfg.discriminator.optim, callbacks=callbacks,
                     monitor=monitor if cfg.monitor_samples > 0 else None, collapse_patience=cfg.collapse_patience,
                     time_budget_s=60 * cfg.train.time_budget_min)


def gan_stage(cfg: GanConfig, info: dict) -> Stage:
    return Stage(STAGE, lambda trained: build_task(cfg, info), cfg.train, loaders=lambda b: (b.train, None),
                 monitor="val_fid" if cfg.monitor_samples > 0 else None, mode="min",
                 callbacks=lambda task: task.callbacks)


def sampling_generator(gan_run, which: str = "best") -> tuple[torch.nn.Module, dict]:
    """(generator with the `which` checkpoint's sampling weights: the EMA copy when the run kept one, and the
    checkpoint state) of a run whose stage "gan" trained a GAN; `best` falls back to `last`."""
    state, path = gan_run.checkpoint(STAGE, which), gan_run.checkpoint_path(STAGE, which)
    if state is None and which == "best":
        state, path = gan_run.checkpoint(STAGE, "last"), gan_run.checkpoint_path(STAGE, "last")
    if state is None:
        raise UserError(f"{path}: no GAN checkpoint; finish the run with `learnloop resume {gan_run.path}`")
    g = copy.deepcopy(gan_run.tasks[STAGE].nets["generator"])
    callbacks = state.get("callbacks") if isinstance(state.get("callbacks"), dict) else {}
    if gan_run.cfg.ema_decay > 0:
        entry = callbacks.get(EMA_NAME)
        if not isinstance(entry, dict) or not isinstance(entry.get("shadow"), dict):
            raise CorruptFileError(f"{path}: checkpoint has no EMA weights '{EMA_NAME}' although ema_decay > 0")
        weights = entry["shadow"]
    else:
        modules = state.get("modules")
        weights = modules.get("generator") if isinstance(modules, dict) else None
    load_modules(_Modules(generator=g), {"modules": {"generator": weights}}, path)   # checks names and shapes
    g.eval()
    return g, state


class _Modules:
    """Named modules, as `load_modules` takes them from a task."""

    def __init__(self, **modules):
        self.named = modules

    def modules(self) -> dict:
        return self.named


# --- evaluation ----------------------------------------------------------------------------------------------------
def _flatten(prefix: str, result: dict) -> dict:
    out = {}
    for k, v in result.items():
        if isinstance(v, dict):
            out.update(_flatten(f"{prefix}{k}_", v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
            out.update({f"{prefix}{k}_{i}": float(x) for i, x in enumerate(v)})
    return out


def class_accuracy(generator, cfg: GanConfig, ex, k: int, n: int, seed: int = 0) -> dict:
    """cGAN: how often the evaluation classifier `ex` recognises the requested class (overall and per class)."""
    labels = torch.arange(n) % k
    images = sample_images(generator, n, cfg.z_dim, k, labels=labels, seed=seed)
    pred = ex.probs(images).argmax(1)
    hit = (pred == labels).float()
    out = {"class_accuracy": float(hit.mean())}
    out.update({f"class_accuracy_{c}": float(hit[labels == c].mean()) for c in range(k)})
    return out


def evaluate_checkpoints(gan_run, run, seed: int) -> dict:
    """Full metric set (`eval` section) for the `best` and `last` checkpoints of `gan_run`'s stage "gan"
    (prefixes best_ / last_), with the real-data floor and the noise ceiling; sample grids go to `run`'s
    plots."""
    from learnloop.evaluation.generative import evaluate_generated, format_report

    cfg = gan_run.cfg
    require_evaluator(cfg.eval)
    k = num_classes(cfg, gan_run.info)
    judge = None
    if k:
        ex = load_extractor(cfg.eval)
        judge = ex if ex.num_classes == k else None
        if judge is None:
            run.say(f"no class accuracy: extractor '{cfg.eval.extractor}' does not classify the {k} data classes")
    metrics: dict = {}
    for which in ("best", "last"):
        g, state = sampling_generator(gan_run, which)
        fake = sample_images(g, cfg.eval.samples, cfg.z_dim, k, seed=seed + 77)
        result = evaluate_generated(fake, cfg.eval, seed)
        run.say(f"{which} checkpoint (epoch {state['epoch']}):\n{format_report(result)}")
        for key in ("floor", "ceiling", "protocol"):
            if which == "best" and isinstance(result.get(key), dict):
                metrics.update(_flatten(f"{key}_", result[key]))
        metrics.update(_flatten(f"{which}_", {key: v for key, v in result.items()
                                              if key not in ("floor", "ceiling", "protocol")}))
        metrics[f"{which}_epoch"] = state["epoch"]
        if judge is not None:
            metrics.update(_flatten(f"{which}_", class_accuracy(g, cfg, judge, k, cfg.eval.samples, seed)))
        save_image_grid(fake[:100], run.plots / f"samples_{which}.png", nrow=10)
    return metrics


def training_summary(run) -> dict:
    """Epochs, steps, generator updates, divergence and the last epoch's train_/val_ metrics of the stage
    "gan", from its `last` checkpoint (so `learnloop eval` reports what training did)."""
    state = run.checkpoint(STAGE, "last")
    if state is None:
        raise UserError(f"{run.path}: no GAN checkpoint (checkpoints/{STAGE}/last.safetensors); "
                        f"finish it with `learnloop resume {run.path}`")
    task = state.get("task") if isinstance(state.get("task"), dict) else {}
    updates = task.get("updates") if isinstance(task.get("updates"), dict) else {}
    out = {"epochs_trained": state["epoch"], "steps": state["step"],
           "generator_steps": int(updates.get("generator", 0)),
           "diverged": 1.0 if task.get("stop_message") else 0.0}
    if isinstance(state.get("best"), (int, float)):
        out["best_val_fid"] = float(state["best"])
    if state.get("stop_reason"):
        out["stop_reason"] = str(state["stop_reason"])
    history = state.get("history") if isinstance(state.get("history"), list) else []
    if history and isinstance(history[-1], dict):
        out.update({key: v for key, v in history[-1].items() if key.startswith(("train_", "val_"))})
    return out


def summarise_training(run) -> dict:
    """`training_summary`, the stop reason said, and the training curves plotted."""
    metrics = training_summary(run)
    history = run.history(STAGE)
    if history:
        plot_curves(history, run.plots / "curves.png", title=run.path.parent.name)
    if metrics.get("stop_reason"):
        run.say(metrics["stop_reason"])
    return metrics
