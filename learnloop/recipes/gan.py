"""GAN recipes on Fashion-MNIST: six variants of one configuration, plus three studies of a trained generator.

Every GAN is `GanParts` with a `GanConfig` whose architecture, loss, regularizer and normalisation are
choices (learnloop.models.gan, learnloop.losses.adversarial / .regularizers), trained as the two players
"generator" and "discriminator" of one `learnloop.tasks.adversarial.AdversarialTask` (stage "gan",
checkpoints/gan/):

    gan-mlp     MLP G and D, non-saturating BCE loss (Goodfellow et al., 2014)
    dcgan       DCGAN G and D (Radford et al., 2016), non-saturating BCE loss
    wgan-clip   Wasserstein loss + weight clipping, RMSprop, n_critic = 5 (Arjovsky et al., 2017)
    wgan-gp     Wasserstein loss + gradient penalty, critic without BatchNorm (Gulrajani et al., 2017)
    sngan       hinge loss + spectral norm on every D layer (Miyato et al., 2018)
    cgan        DCGAN with the one-hot class concatenated to z and to D's input (Mirza & Osindero, 2014)

so `learnloop run dcgan --set loss=hinge --set spectral_norm=true` is a valid experiment. The EMA of G's
weights, the per-epoch sample grid of a fixed noise batch and weight clipping are engine callbacks
(learnloop.engine.ema.EMA, learnloop.engine.callbacks.SampleGrid / WeightClipping). During training a cheap
FID (2k samples, evaluator features) is logged per epoch and selects the `best` checkpoint; the final
evaluation reports the full metric set (learnloop.evaluation.generative) for both `best` and `last`, so a
GAN that diverged late is visible. The predictor turns seeds into samples. The studies consume a GAN run
(`generator_run`, any of the six) or train one first as their stage "gan":

    truncation       truncation trick (Brock et al., 2019): precision vs recall as |z_i| <= t tightens
    gan-bias-probe   class and attribute frequencies of samples vs real data, through the evaluation
                     classifier: under-/over-represented modes (mode collapse, bias)
    controllable     z <- z + eta * grad_z log p_c(G(z)) with an attribute classifier c (a class, or the
                     image brightness; the class guide is trained as stage "guide"), judged by the
                     separate evaluator: success rate and entanglement
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from learnloop.data.loader import RandomBatches, TensorLoader
from learnloop.data.vision import ImageData, load_fashion_mnist
from learnloop.engine.callbacks import SampleGrid, WeightClipping
from learnloop.engine.ema import EMA
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import CorruptFileError, UserError
from learnloop.evaluation.generative import FeatureConfig, GenerativeEvalConfig, load_extractor
from learnloop.losses.adversarial import ADVERSARIAL_LOSSES
from learnloop.losses.regularizers import PENALTIES, REGULARIZERS
from learnloop.models.gan import ARCHITECTURES, D_NORMS, build_gan
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section, with_defaults
from learnloop.recipes.runs import load_modules
from learnloop.recipes.sections import TrainConfig
from learnloop.tasks.adversarial import AdversarialTask, generate, noise_gan, sample_noise
from learnloop.utils.images import save_image_grid, to_uint8
from learnloop.utils.plots import plot_curves

STAGE = "gan"                # checkpoints/gan/{best,last}.safetensors
GANS = ("gan-mlp", "dcgan", "wgan-clip", "wgan-gp", "sngan", "cgan")
EMA_NAME = "ema_generator"   # the EMA callback's name: its shadow weights are in checkpoints under callbacks/


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
    regularizer: str = param("none", "D regularizer: weight clipping, gradient penalty or R1", choices=REGULARIZERS)
    reg_weight: float = param(10.0, "gradient-penalty lambda or R1 gamma", min=0.0)
    reg_every: int = param(1, "lazy regularization: apply gp/r1 (times this) every this many D updates", min=1)
    clip_value: float = param(0.01, "weight-clipping bound c", min=1e-6)
    spectral_norm: bool = param(False, "spectral normalisation on every D layer")
    d_norm: str = param("batch", "normalisation in D's hidden layers (batch is invalid with gp/r1)", choices=D_NORMS)
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
        raise UserError(f"eval: need k < samples and splits <= samples, got k={cfg.eval.k}, splits={cfg.eval.splits}, "
                        f"samples={cfg.eval.samples}")


# --- data ------------------------------------------------------------------------------------------------------
def load_train_images(data: GanDataConfig, seed: int = 0) -> ImageData:
    images = load_fashion_mnist("train", data.path or None)
    if 0 < data.subset < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:data.subset]
        images = images.subset(keep)
    return images


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


# --- evaluator glue (learnloop.evaluation, learnloop.models.evaluator) ------------------------------------------
def evaluator_available() -> bool:
    """The shipped Fashion-MNIST evaluator's weights and reference statistics are installed."""
    from learnloop.models.evaluator import STATS_FILE, WEIGHTS_FILE, assets_dir

    return (assets_dir() / WEIGHTS_FILE).is_file() and (assets_dir() / STATS_FILE).is_file()


def extractor_ready(features: FeatureConfig) -> bool:
    """Whether evaluation can run: the Fashion evaluator is installed, or another extractor loads."""
    if features.extractor == "fashion":
        return evaluator_available()
    with torch.random.fork_rng(devices=[]):        # building it must not shift training's random stream
        load_extractor(features)
    return True


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

    fixed_z = sample_noise(cfg.grid_samples, cfg.z_dim, generator=torch.Generator().manual_seed(1234))
    fixed_y = torch.arange(cfg.grid_samples) % k if k else None

    def grid(learner) -> torch.Tensor:
        net = sampler()
        was = net.training
        net.eval()
        try:
            dev = next(net.parameters()).device
            return net(fixed_z.to(dev), fixed_y.to(dev) if k else None).cpu()
        finally:
            net.train(was)

    fid = FIDMonitor(cfg.eval)

    def monitor(learner) -> dict:
        images = generate(sampler(), cfg.monitor_samples, cfg.z_dim, k, seed=10_000 + learner.epoch)
        return fid(to_uint8(images, (-1, 1)))

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
    images = to_uint8(generate(generator, n, cfg.z_dim, k, labels=labels, seed=seed), (-1, 1))
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
        fake = to_uint8(generate(g, cfg.eval.samples, cfg.z_dim, k, seed=seed + 77), (-1, 1))
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


# --- predictor -----------------------------------------------------------------------------------------------------
SAMPLE = re.compile(r"^(\d{1,19})(?:x(\d{1,4}))?(?::(.+))?$")
MAX_GRID = 256


class SamplePredictor(Predictor):
    inputs = ("seeds: SEED (one sample as a PNG) or SEEDxN (a grid of N <= 256 samples); a conditional GAN also "
              "takes SEED:CLASS or SEEDxN:CLASS (a class name or id), e.g. 42, 7x16, 42:Sneaker; PNGs are written "
              "to the run's samples/ folder")

    def __init__(self, run):
        self.run, self.cfg = run, run.cfg
        self.classes = list(run.info["classes"])
        self.k = num_classes(self.cfg, run.info)
        self.generator, _ = sampling_generator(run, run.which)

    def examples(self, folder) -> list[str]:
        return ["42", "7x4"] + ([f"3:{self.classes[1]}", "5x2:0"] if self.k else [])

    def _parse(self, raw: str) -> tuple[int, int, int | None]:
        m = SAMPLE.match(raw.strip()) if isinstance(raw, str) else None
        if m is None:
            raise UserError(f"{raw!r}: expected SEED or SEEDxN{' with :CLASS' if self.k else ''}, e.g. 42 or 7x16")
        seed, n = int(m.group(1)), int(m.group(2) or 1)
        if seed >= 2 ** 63:
            raise UserError(f"{raw!r}: the seed must be below 2**63")
        if not 1 <= n <= MAX_GRID:
            raise UserError(f"{raw!r}: N must be between 1 and {MAX_GRID}")
        if m.group(3) is None:
            return seed, n, None
        if not self.k:
            raise UserError(f"{raw!r}: this generator is unconditional; give a seed only (e.g. {seed})")
        name = m.group(3).strip()
        if name.isdigit() and int(name) < self.k:
            return seed, n, int(name)
        lower = [c.lower() for c in self.classes]
        if name.lower() in lower:
            return seed, n, lower.index(name.lower())
        raise UserError(f"{raw!r}: unknown class {name!r}; use an id 0..{self.k - 1} or one of: "
                        f"{', '.join(self.classes)}")

    def __call__(self, raw: list[str]) -> list[dict]:
        from PIL import Image

        out = []
        for text in raw:
            seed, n, label = self._parse(text)
            labels = torch.full((n,), label, dtype=torch.long) if label is not None else None
            images = to_uint8(generate(self.generator, n, self.cfg.z_dim, self.k, labels=labels, seed=seed), (-1, 1))
            tag = f"seed{seed}" + (f"x{n}" if n > 1 else "") + (f"_class{label}" if label is not None else "")
            path = self.run.samples / f"predict_{tag}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if n == 1:
                pixels = images[0].permute(1, 2, 0).numpy()
                Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)
            else:
                save_image_grid(images, path, nrow=math.ceil(math.sqrt(n)))
            row = {"input": text, "path": str(path), "seed": seed, "samples": n}
            if self.k:
                row["class"] = self.classes[label] if label is not None else "cycling through the classes"
            out.append(row)
        return out


# --- the six GANs ----------------------------------------------------------------------------------------------
class GanParts(Parts):
    def data(self, cfg: GanConfig, seed: int) -> Bundle:
        extractor_ready(cfg.eval)                 # an unknown extractor or a missing weights file fails now
        return gan_bundle(cfg, seed)

    def stages(self, cfg: GanConfig, info: dict, upstream: dict) -> list[Stage]:
        return [gan_stage(cfg, info)]

    def evaluate(self, cfg: GanConfig, run, data: Bundle) -> dict:
        metrics = summarise_training(run)
        if extractor_ready(cfg.eval):
            metrics.update(evaluate_checkpoints(run, run, run.seed))
        else:
            run.say("evaluator weights missing: skipping FID/KID/precision/recall (run bench/train_evaluator.py, "
                    "then `learnloop eval RUN_DIR`)")
        return metrics

    def predictor(self, run) -> Predictor:
        return SamplePredictor(run)


_TARGET = "precision >= 0.6, recall >= 0.3 (k=5, evaluator features); every class >= 3% of 10k samples"
SMOKE = {"train.epochs": 1, "train.steps_per_epoch": 4, "train.batch_size": 16, "monitor_samples": 200,
         "eval.samples": 200, "data.subset": 500}


def _gan_recipe(name: str, summary: str, target: str = _TARGET, **defaults) -> None:
    config = with_defaults(GanConfig, name.title().replace("-", "") + "Config", **defaults)
    recipe(name, summary, config, target=target, main_metric="best_fid", benchmark="python bench/bench_gans.py",
           smoke=SMOKE)(GanParts)


_WGAN_GP_OPTIM = dict(optim=dict(lr=1e-4, betas=(0.0, 0.9)))
_WGAN_CLIP_OPTIM = dict(optim=dict(name="rmsprop", lr=5e-5, momentum=0.0))
_gan_recipe("gan-mlp", "MLP generator and discriminator, non-saturating BCE loss (Goodfellow et al., 2014)",
            target="FID well below the floor (a baseline for the other GANs)", arch="mlp", d_norm="none",
            train=dict(batch_size=64, epochs=15))
_gan_recipe("dcgan", "DCGAN (Radford et al., 2016): transposed-conv G, strided-conv D, BatchNorm, BCE loss")
_gan_recipe("wgan-clip", "WGAN (Arjovsky et al., 2017): Wasserstein loss + weight clipping, RMSprop, n_critic=5",
            target="trains without collapse; FID below gan-mlp's", loss="wasserstein", regularizer="clip",
            generator=_WGAN_CLIP_OPTIM, discriminator=_WGAN_CLIP_OPTIM, n_critic=5, train=dict(epochs=15))
_gan_recipe("wgan-gp", "WGAN-GP (Gulrajani et al., 2017): Wasserstein loss + gradient penalty, no BN in the critic",
            loss="wasserstein", regularizer="gp", reg_weight=10.0, d_norm="layer", n_critic=5,
            generator=_WGAN_GP_OPTIM, discriminator=_WGAN_GP_OPTIM, train=dict(epochs=15))
_gan_recipe("sngan", "SNGAN (Miyato et al., 2018): hinge loss + spectral norm in D (power iteration from scratch)",
            loss="hinge", spectral_norm=True, d_norm="none", discriminator=dict(optim=dict(lr=4e-4)),
            train=dict(epochs=45))
_gan_recipe("cgan", "conditional DCGAN (Mirza & Osindero, 2014): one-hot class concatenated to z and D's input",
            target="the evaluator recognises the requested class in >= 0.85 of samples", conditional=True)


# --- studies of a trained generator -----------------------------------------------------------------------------
@dataclass
class StudyConfig(GanConfig):
    """A study's settings; the GAN settings above train its generator when `generator_run` is empty."""

    generator_run: str = param("", "a finished GAN run folder to study (empty: train one first with these "
                                    "settings)")
    checkpoint: str = param("best", "which checkpoint of the generator", choices=("best", "last"))


class StudyParts(Parts):
    """A study of a generator: the `generator_run` it consumes, or the GAN it trains first (stage "gan")."""

    needs = {"generator_run": GANS}

    def data(self, cfg: StudyConfig, seed: int) -> Bundle:
        require_evaluator(cfg.eval)
        return gan_bundle(cfg, seed, train=not cfg.generator_run)

    def stages(self, cfg: StudyConfig, info: dict, upstream: dict) -> list[Stage]:
        return [] if cfg.generator_run else [gan_stage(cfg, info)]

    def evaluate(self, cfg: StudyConfig, run, data: Bundle) -> dict:
        gan_run = run.upstream.get("generator_run")
        if gan_run is not None:
            metrics = {}
            run.say(f"generator: {gan_run.checkpoint_path(STAGE, cfg.checkpoint)}")
        else:
            gan_run, metrics = run, summarise_training(run)
        g, _ = sampling_generator(gan_run, cfg.checkpoint)
        metrics.update(self.study(cfg, run, data, g, gan_run))
        return metrics

    def study(self, cfg, run, data: Bundle, g: torch.nn.Module, gan_run) -> dict:
        raise NotImplementedError


def _grouped_bars(groups: dict[str, list[float]], labels: list[str], path: Path, ylabel: str, title: str,
                  hline: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learnloop.utils.io import save_figure

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4))
    width = 0.8 / len(groups)
    for i, (name, values) in enumerate(groups.items()):
        ax.bar([j + (i - (len(groups) - 1) / 2) * width for j in range(len(labels))], values, width, label=name)
    if hline is not None:
        ax.axhline(hline, color="red", lw=1, ls="--", label=f"{hline:g}")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# truncation ------------------------------------------------------------------------------------------------
@dataclass
class TruncationConfig(StudyConfig):
    truncations: tuple[float, ...] = param((0.0, 2.0, 1.5, 1.0, 0.75, 0.5, 0.25),
                                           "truncation thresholds t, loosest first (0: no truncation)", min=0.0)
    study_samples: int = param(5000, "samples per truncation level", min=100)


def _monotone_fraction(values: list[float], rising: bool) -> float:
    steps = list(itertools.pairwise(values))
    good = sum((b > a) if rising else (b < a) for a, b in steps)
    return good / max(len(steps), 1)


STUDY_SMOKE = {**SMOKE, "study_samples": 200}


@recipe("truncation", "truncation trick (Brock et al., 2019): precision vs recall as the noise is truncated",
        TruncationConfig, main_metric="precision_gain", target="precision rises and recall falls as truncation "
        "tightens", smoke={**STUDY_SMOKE, "truncations": "0,1,0.25"})
class Truncation(StudyParts):
    def study(self, cfg: TruncationConfig, run, data, g, gan_run) -> dict:
        from learnloop.evaluation.generative import evaluate_images
        from learnloop.utils.plots import plot_lines

        gcfg = gan_run.cfg
        k = num_classes(gcfg, gan_run.info)
        levels = sorted(cfg.truncations, key=lambda t: -math.inf if t <= 0 else -t)   # none, then tighter
        rows, metrics = [], {}
        for t in levels:
            fake = to_uint8(generate(g, cfg.study_samples, gcfg.z_dim, k, truncation=t if t > 0 else None,
                                     seed=run.seed + 5), (-1, 1))
            r = evaluate_images(fake, cfg.eval.reference, k=cfg.eval.k, seed=run.seed, splits=cfg.eval.splits,
                                extractor=load_extractor(cfg.eval), with_floor=False, with_ceiling=False)
            rows.append({"t": t, **{key: r[key] for key in ("fid", "precision", "recall", "density", "coverage")},
                         "min_class_fraction": min(r["class_hist"])})
            tag = "none" if t <= 0 else f"{t:g}"
            run.say(f"truncation {tag}: precision {r['precision']:.3f} recall {r['recall']:.3f} FID {r['fid']:.2f}")
            save_image_grid(fake[:64], run.plots / f"samples_truncation_{tag}.png", nrow=8)
            for key in ("fid", "precision", "recall", "density", "coverage", "min_class_fraction"):
                metrics[f"t{tag}_{key}"] = rows[-1][key]
        plot_lines({"precision vs recall": ([r["recall"] for r in rows], [r["precision"] for r in rows])},
                   run.plots / "truncation_precision_recall.png", "recall (diversity)", "precision (fidelity)",
                   "truncation: " + ", ".join("none" if r["t"] <= 0 else f"{r['t']:g}" for r in rows))
        xs = list(range(len(rows)))
        plot_lines({key: (xs, [r[key] for r in rows]) for key in ("precision", "recall", "density", "coverage")},
                   run.plots / "truncation_sweep.png", "truncation level index (0 = none, tighter to the right)",
                   "value", "truncation sweep")
        metrics.update({
            "precision_rises": _monotone_fraction([r["precision"] for r in rows], True),
            "recall_falls": _monotone_fraction([r["recall"] for r in rows], False),
            "precision_gain": rows[-1]["precision"] - rows[0]["precision"],
            "recall_loss": rows[0]["recall"] - rows[-1]["recall"]})
        return metrics


# bias probe ------------------------------------------------------------------------------------------------
@dataclass
class BiasProbeConfig(StudyConfig):
    study_samples: int = param(10000, "generated samples to probe", min=100)
    tolerance: float = param(0.3, "flag a class/bin whose frequency ratio generated/real is outside 1 +- this",
                             min=0.0, max=1.0)
    min_fraction: float = param(0.03, "flag a class below this fraction of the samples", min=0.0, max=1.0)
    low_confidence: float = param(0.5, "a sample is low-confidence when the evaluator's top probability is "
                                       "below this", min=0.0, max=1.0)
    real_subset: int = param(0, "compare with this many real test images, a seeded subset (0: all)", min=0)


def pixel_attributes(images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image attributes a classifier cannot see in its class: brightness (mean intensity in [0, 1]) and
    ink area (fraction of pixels above half intensity)."""
    x = images_uint8.float().flatten(1) / 255
    return {"brightness": x.mean(1), "ink_area": (x > 0.5).float().mean(1)}


def frequency_table(real: torch.Tensor, fake: torch.Tensor, names: list[str], tolerance: float,
                    min_fraction: float = 0.0) -> list[dict]:
    """Rows (name, real fraction, generated fraction, ratio, flag) for two frequency vectors."""
    rows = []
    for name, r, f in zip(names, real.tolist(), fake.tolist()):
        ratio = f / r if r > 0 else math.inf
        flag = ""
        if ratio < 1 - tolerance or f < min_fraction:
            flag = "under"
        elif ratio > 1 + tolerance:
            flag = "over"
        rows.append({"name": name, "real": r, "generated": f, "ratio": ratio, "flag": flag})
    return rows


def _markdown(rows: list[dict], title: str) -> str:
    out = [f"### {title}", "", "| | real | generated | ratio | flag |", "|---|---:|---:|---:|---|"]
    out += [f"| {r['name']} | {r['real']:.3f} | {r['generated']:.3f} | {r['ratio']:.2f} | {r['flag']} |" for r in rows]
    return "\n".join(out) + "\n"


def real_test_images(cfg: StudyConfig) -> ImageData:
    return load_fashion_mnist("test", cfg.data.path or None)


@recipe("gan-bias-probe", "probe a GAN's mode coverage and biases with the evaluation classifier", BiasProbeConfig,
        main_metric="min_class_fraction", smoke={**STUDY_SMOKE, "real_subset": 1000},
        target="all 10 classes present, none under 3% of 10k samples; flags under/over-represented modes")
class BiasProbe(StudyParts):
    def study(self, cfg: BiasProbeConfig, run, data, g, gan_run) -> dict:
        from learnloop.utils.io import write_text

        gcfg = gan_run.cfg
        names = list(gan_run.info["classes"])
        fake = to_uint8(generate(g, cfg.study_samples, gcfg.z_dim, num_classes(gcfg, gan_run.info),
                                 seed=run.seed + 9), (-1, 1))
        real = real_test_images(cfg)
        if 0 < cfg.real_subset < len(real):
            real = real.subset(torch.randperm(len(real), generator=torch.Generator().manual_seed(run.seed))
                               [:cfg.real_subset])
        ex = classifier(cfg.eval, names)
        p_fake, p_real = ex.probs(fake), ex.probs(real.images)
        # the classifier's own errors cancel when both sides are seen through it
        h_fake = torch.bincount(p_fake.argmax(1), minlength=len(names)).double() / len(fake)
        h_real = torch.bincount(p_real.argmax(1), minlength=len(names)).double() / len(real)
        classes = frequency_table(h_real, h_fake, names, cfg.tolerance, cfg.min_fraction)
        report = [_markdown(classes, "class frequencies (evaluation classifier's argmax)")]
        conf_fake, conf_real = p_fake.max(1).values, p_real.max(1).values
        metrics = {"min_class_fraction": float(h_fake.min()), "classes_present": int((h_fake > 0).sum()),
                   "classes_under_min_fraction": int((h_fake < cfg.min_fraction).sum()),
                   "class_tv_distance": float(0.5 * (h_fake - h_real).abs().sum()),
                   "low_confidence_fraction": float((conf_fake < cfg.low_confidence).float().mean()),
                   "real_low_confidence_fraction": float((conf_real < cfg.low_confidence).float().mean())}
        metrics.update({f"class_fraction_{i}": float(h) for i, h in enumerate(h_fake)})
        metrics["under_represented"] = ", ".join(r["name"] for r in classes if r["flag"] == "under")
        metrics["over_represented"] = ", ".join(r["name"] for r in classes if r["flag"] == "over")
        # attributes: frequencies of the real data's quartile bins
        a_real, a_fake = pixel_attributes(real.images), pixel_attributes(fake)
        flagged_bins = 0
        for name in a_real:
            edges = torch.quantile(a_real[name], torch.tensor([0.25, 0.5, 0.75]))
            bins_r = torch.bincount(torch.bucketize(a_real[name], edges), minlength=4).double() / len(real)
            bins_f = torch.bincount(torch.bucketize(a_fake[name], edges), minlength=4).double() / len(fake)
            rows = frequency_table(bins_r, bins_f, [f"{name} Q{i + 1}" for i in range(4)], cfg.tolerance)
            flagged_bins += sum(bool(r["flag"]) for r in rows)
            report.append(_markdown(rows, f"{name} (real quartile bins; real mean {float(a_real[name].mean()):.3f}, "
                                          f"generated mean {float(a_fake[name].mean()):.3f})"))
            metrics[f"{name}_shift_std"] = float((a_fake[name].mean() - a_real[name].mean()) / a_real[name].std())
            _grouped_bars({"real": bins_r.tolist(), "generated": bins_f.tolist()}, [r["name"] for r in rows],
                          run.plots / f"bias_{name}.png", "fraction", f"{name}: real quartile bins")
        metrics["attribute_bins_flagged"] = flagged_bins
        _grouped_bars({"real (classified)": h_real.tolist(), "generated": h_fake.tolist()}, names,
                      run.plots / "bias_classes.png", "fraction", "class frequencies", hline=cfg.min_fraction)
        text = "\n".join(report)
        write_text(run.plots / "bias_probe.md", text)
        run.say(text)
        return metrics


# controllable generation ---------------------------------------------------------------------------------------
@dataclass
class ControllableConfig(StudyConfig):
    edit_samples: int = param(200, "latent vectors to edit", min=10)
    edit_steps: int = param(40, "gradient steps in z", min=1)
    edit_lr: float = param(0.1, "step length in z-space (normalised gradient steps)", min=0.0)
    z_anchor: float = param(1.0, "weight of ||z - z0||^2 / dim keeping the edit close to the start", min=0.0)
    brightness_shift: float = param(1.0, "brightness edit: target change in real-data standard deviations",
                                    min=0.0)
    brightness_success: float = param(0.5, "a brightness edit succeeds when brightness rises by this many "
                                           "standard deviations", min=0.0)
    guide_subset: int = param(20000, "training images for the guide classifier", min=1000)
    guide_dropout: float = param(0.2, "dropout of the guide classifier", min=0.0, max=0.9)
    guide: TrainConfig = section(TrainConfig, "training of the guide (class) classifier that the edit climbs",
                                 epochs=2, batch_size=128, optim=OptimConfig(name="adamw", lr=2e-3),
                                 schedule=ScheduleConfig(kind="one-cycle"))

    MOVED = {**GanConfig.MOVED, "guide_epochs": "guide.epochs"}


def guide_images(cfg: ControllableConfig, seed: int) -> TensorLoader:
    """A seeded subset of the training images in G's range [-1, 1], for the guide classifier."""
    data = load_fashion_mnist("train", cfg.data.path or None)
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 11))[:cfg.guide_subset]

    def transform(batch):
        return batch[0].float().div(127.5).sub(1.0), batch[1]

    return TensorLoader((data.images[keep], data.labels[keep]), cfg.guide.batch_size, True, seed=seed,
                        transform=transform)


def guide_task(cfg: ControllableConfig, info: dict):
    """The attribute classifier used for the gradient: a small CNN on images in G's range [-1, 1], trained
    (stage "guide") so that success is judged by a *different* network (the evaluator), not by the one
    being climbed."""
    from learnloop.models.classic import SmallCNN
    from learnloop.tasks.classification import Classification

    c, h, _ = info["shape"]
    model = SmallCNN(c, len(info["classes"]), dropout=cfg.guide_dropout, image_size=h)
    return Classification(model, len(info["classes"]), cfg.guide.optim)


def edit_latents(g: torch.nn.Module, z0: torch.Tensor, score, steps: int, lr: float, anchor: float,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised gradient ascent in z, per sample (each sample's objective depends on its own z only):
    z <- z + lr * g / ||g||,  g = grad_z [score(G(z)) - anchor * ||z - z0||^2 / dim]."""
    z = z0.clone().requires_grad_(True)
    for _ in range(steps):
        x = g(z, labels)
        objective = score(x) - anchor * (z - z0).pow(2).sum(1) / z.shape[1]
        (grad,) = torch.autograd.grad(objective.sum(), z)
        with torch.no_grad():
            z += lr * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return z.detach()


def _conditional(cfg: StudyConfig, upstream: dict) -> bool:
    gan_run = upstream.get("generator_run")
    return gan_run.cfg.conditional if gan_run is not None else cfg.conditional


@recipe("controllable", "controllable generation: move z along an attribute classifier's gradient", ControllableConfig,
        main_metric="class_edit_success", smoke={**SMOKE, "edit_samples": 10, "edit_steps": 2, "guide_subset": 1000,
                                                 "guide.epochs": 1},
        target="class edits succeed (judged by the evaluator) with small changes of the other attributes")
class Controllable(StudyParts):
    def data(self, cfg: ControllableConfig, seed: int) -> Bundle:
        from learnloop.models.evaluator import load_fashion_evaluator

        bundle = super().data(cfg, seed)
        bundle.extra["guide"] = guide_images(cfg, seed)
        # built before the guide classifier, as before the port: the guide's initialisation depends on the
        # RNG draws of every model built before it (the evaluator's and the generator's, whose weights are
        # then loaded)
        load_fashion_evaluator()
        return bundle

    def stages(self, cfg: ControllableConfig, info: dict, upstream: dict) -> list[Stage]:
        if _conditional(cfg, upstream):
            raise UserError("controllable generation edits an unconditional generator; choose a non-conditional run")
        guide = Stage("guide", lambda trained: guide_task(cfg, info), cfg.guide,
                      loaders=lambda b: (b.extra["guide"], None), monitor=None)
        return [*super().stages(cfg, info, upstream), guide]

    def study(self, cfg: ControllableConfig, run, data, g, gan_run) -> dict:
        import torch.nn.functional as F

        gcfg = gan_run.cfg
        names = list(gan_run.info["classes"])
        k = len(names)
        g.requires_grad_(False)
        guide = run.tasks["guide"].model
        guide.eval()
        guide.requires_grad_(False)
        rows = run.history("guide")
        if rows:
            run.say(f"guide classifier: train accuracy {rows[-1].get('train_accuracy', float('nan')):.3f}")
        ex = classifier(cfg.eval, names)
        gen = torch.Generator().manual_seed(run.seed + 13)
        n = cfg.edit_samples
        z0 = torch.randn(n, gcfg.z_dim, generator=gen)
        with torch.no_grad():
            x0 = to_uint8(g(z0), (-1, 1))
        c0 = ex.probs(x0).argmax(1)
        real_attr = pixel_attributes(real_test_images(cfg).images)
        std = {key: float(v.std()) for key, v in real_attr.items()}
        a0 = pixel_attributes(x0)

        # 1. class edit: log p_guide(target | G(z)), target != current class
        target = (c0 + torch.randint(1, k, (n,), generator=gen)) % k
        z1 = edit_latents(g, z0, lambda x: F.log_softmax(guide(x), 1).gather(1, target[:, None]).squeeze(1),
                          cfg.edit_steps, cfg.edit_lr, cfg.z_anchor)
        with torch.no_grad():
            x1 = to_uint8(g(z1), (-1, 1))
            guide_hit = (guide(x1.float() / 127.5 - 1).argmax(1) == target).float().mean()
        c1 = ex.probs(x1).argmax(1)
        a1 = pixel_attributes(x1)
        metrics = {
            "class_edit_success": float((c1 == target).float().mean()),
            "class_edit_guide_success": float(guide_hit),
            "class_edit_z_distance": float((z1 - z0).norm(dim=1).mean()),
            **{f"class_edit_delta_{key}_std": float((a1[key] - a0[key]).abs().mean() / std[key]) for key in a0}}

        # 2. attribute edit: brightness up by `brightness_shift` real standard deviations (a pixel statistic is
        # its own scorer)
        goal = a0["brightness"] + cfg.brightness_shift * std["brightness"]
        z2 = edit_latents(g, z0, lambda x: -((x.flatten(1).add(1).div(2).mean(1) - goal) / std["brightness"]).pow(2),
                          cfg.edit_steps, cfg.edit_lr, cfg.z_anchor)
        with torch.no_grad():
            x2 = to_uint8(g(z2), (-1, 1))
        a2, c2 = pixel_attributes(x2), ex.probs(x2).argmax(1)
        rise = a2["brightness"] - a0["brightness"]
        metrics.update({
            "brightness_edit_success": float((rise >= cfg.brightness_success * std["brightness"]).float().mean()),
            "brightness_edit_mean_change_std": float(rise.mean() / std["brightness"]),
            "brightness_edit_class_changed": float((c2 != c0).float().mean()),
            "brightness_edit_delta_ink_area_std": float((a2["ink_area"] - a0["ink_area"]).abs().mean()
                                                        / std["ink_area"]),
            "brightness_edit_z_distance": float((z2 - z0).norm(dim=1).mean())})
        shown = min(8, n)
        grid = torch.stack([x0[:shown], x1[:shown], x2[:shown]], 1).flatten(0, 1)
        save_image_grid(grid, run.plots / "edits.png", nrow=3)
        run.say("edits.png: columns = original, class edit (targets "
                + ", ".join(names[int(t)] for t in target[:shown]) + "), brighter")
        run.say(", ".join(f"{key}={v:.3f}" for key, v in metrics.items() if "edit" in key and isinstance(v, float)))
        return metrics
