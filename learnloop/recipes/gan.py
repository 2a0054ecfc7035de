"""GAN recipes on Fashion-MNIST: six variants of one configuration, plus three studies of a trained generator.

Every GAN is `train_gan` with a `GanConfig` whose architecture, loss, regularizer and normalisation are
choices (learnloop.models.gan, learnloop.losses.adversarial / .regularizers, learnloop.tasks.adversarial):

    gan-mlp     MLP G and D, non-saturating BCE loss (Goodfellow et al., 2014)
    dcgan       DCGAN G and D (Radford et al., 2016), non-saturating BCE loss
    wgan-clip   Wasserstein loss + weight clipping, RMSprop, n_critic = 5 (Arjovsky et al., 2017)
    wgan-gp     Wasserstein loss + gradient penalty, critic without BatchNorm (Gulrajani et al., 2017)
    sngan       hinge loss + spectral norm on every D layer (Miyato et al., 2018)
    cgan        DCGAN with the one-hot class concatenated to z and to D's input (Mirza & Osindero, 2014)

so `learnloop run dcgan --set loss=hinge --set spectral_norm=true` is a valid experiment. During training
a cheap FID (2k samples, evaluator features) is logged per epoch and selects the `best` checkpoint; the
final evaluation reports the full metric set (learnloop.evaluation.generative) for both `best` and `last`,
so a GAN that diverged late is visible. The studies reuse a generator (trained first, or `generator_run`):

    truncation       truncation trick (Brock et al., 2019): precision vs recall as |z_i| <= t tightens
    gan-bias-probe   class and attribute frequencies of samples vs real data, through the evaluation
                     classifier: under-/over-represented modes (mode collapse, bias)
    controllable     z <- z + eta * grad_z log p_c(G(z)) with an attribute classifier c (a class, or the
                     image brightness), judged by the separate evaluator: success rate and entanglement
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from learnloop.data.vision import FASHION_CLASSES, ImageData, load_fashion_mnist
from learnloop.engine.checkpoint import load_state
from learnloop.engine.learner import Learner
from learnloop.engine.run import RunFolder
from learnloop.engine.schedules import KINDS, ScheduleConfig
from learnloop.errors import UserError
from learnloop.losses.adversarial import ADVERSARIAL_LOSSES
from learnloop.losses.regularizers import REGULARIZERS
from learnloop.models.gan import ARCHITECTURES, D_NORMS, build_gan
from learnloop.recipes.base import RunContext, attach, recipe
from learnloop.recipes.config import from_dict, param, with_defaults
from learnloop.tasks.adversarial import OPTIMIZERS, AdversarialTask, generate
from learnloop.utils.images import save_image_grid, to_uint8
from learnloop.utils.plots import plot_curves

STAGE = "gan"                # checkpoints/gan/{best,last}.safetensors
FASHION_CLASS_NAMES = FASHION_CLASSES


@dataclass
class GanConfig:
    arch: str = param("dcgan", "generator/discriminator architecture", choices=ARCHITECTURES)
    loss: str = param("non-saturating", "adversarial loss", choices=tuple(ADVERSARIAL_LOSSES))
    regularizer: str = param("none", "D regularizer: weight clipping, gradient penalty or R1", choices=REGULARIZERS)
    reg_weight: float = param(10.0, "gradient-penalty lambda or R1 gamma", min=0.0)
    clip_value: float = param(0.01, "weight-clipping bound c", min=1e-6)
    spectral_norm: bool = param(False, "spectral normalisation on every D layer")
    d_norm: str = param("batch", "normalisation in D's hidden layers (batch is invalid with gp/r1)", choices=D_NORMS)
    g_batchnorm: bool = param(True, "BatchNorm in G")
    conditional: bool = param(False, "class-conditional (one-hot concatenated to z and to D's input)")
    z_dim: int = param(64, "noise dimension", min=1)
    width: int = param(64, "DCGAN base channels w (G: 2w at 7x7, w at 14x14)", min=4)
    epochs: int = param(30, "epochs (each `steps_per_epoch` batches)", min=1)
    steps_per_epoch: int = param(200, "batches per epoch (sampled without replacement, reshuffled per epoch)", min=1)
    batch_size: int = param(64, "batch size", min=2)
    train_subset: int = param(0, "use only this many training images (0: all 60k)", min=0)
    optimizer: str = param("adam", "optimizer for G and D", choices=OPTIMIZERS)
    lr_g: float = param(2e-4, "generator learning rate", min=0.0)
    lr_d: float = param(2e-4, "discriminator learning rate", min=0.0)
    beta1: float = param(0.5, "Adam beta1", min=0.0, max=1.0)
    beta2: float = param(0.999, "Adam beta2", min=0.0, max=1.0)
    n_critic: int = param(1, "D updates per G update", min=1)
    ema_decay: float = param(0.999, "EMA of G's weights for sampling (0: off)", min=0.0, max=1.0)
    schedule: str = param("constant", "learning-rate schedule of both optimizers", choices=KINDS)
    time_budget_min: float = param(0.0, "stop after the epoch in which training has used this many CPU minutes "
                                    "(process time of all threads, sampling and per-epoch FID included; 0: off)",
                                    min=0.0)
    monitor_samples: int = param(2000, "samples for the per-epoch FID that picks the best checkpoint (0: off)",
                                 min=0)
    eval_samples: int = param(10000, "samples for the final evaluation of best and last checkpoints", min=100)
    k: int = param(5, "k of the k-NN precision/recall/density/coverage", min=1)
    collapse_patience: int = param(3, "stop when D wins this many epochs in a row", min=1)
    data_path: str = param("", "Fashion-MNIST folder (default: the standard search order)")


def gan_config(name: str, **defaults) -> type:
    """A GanConfig subclass with other defaults (same fields, help and ranges)."""
    return with_defaults(GanConfig, name, **defaults)


# --- data ----------------------------------------------------------------------------------------------
class RandomBatches:
    """`steps` batches per epoch drawn without replacement from in-memory uint8 images (reshuffled when the
    data runs out), as floats in [-1, 1]; the order is a function of (seed, epoch) for exact resumes."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int, seed: int = 0):
        if len(images) < batch_size:
            raise UserError(f"need at least batch_size={batch_size} training images, got {len(images)}")
        self.images, self.labels, self.batch_size, self.steps, self.seed = images, labels, batch_size, steps, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n, need = len(self.images), self.steps * self.batch_size
        idx = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(need / n))])
        for b in range(self.steps):
            i = idx[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.images[i].float().div_(127.5).sub_(1.0), self.labels[i]


def load_train_images(cfg: GanConfig, seed: int = 0) -> ImageData:
    data = load_fashion_mnist("train", cfg.data_path or None)
    if 0 < cfg.train_subset < len(data):
        keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:cfg.train_subset]
        data = data.subset(keep)
    return data


# --- evaluator glue (learnloop.evaluation.generative, learnloop.models.evaluator) ----------------------------
def evaluator_available() -> bool:
    from learnloop.models.evaluator import STATS_FILE, WEIGHTS_FILE, assets_dir

    return (assets_dir() / WEIGHTS_FILE).is_file() and (assets_dir() / STATS_FILE).is_file()


class FIDMonitor:
    """images (uint8) -> {"fid": FID against the statistics of the whole test split}, evaluator features.
    The evaluator is loaded on first use; while its weights are not installed the monitor returns {} (the
    Learner then keeps the latest checkpoint as `best`)."""

    def __init__(self):
        self.evaluator = self.reference = None

    def __call__(self, images: torch.Tensor) -> dict:
        from learnloop.metrics.generative import feature_stats, fid_from_stats
        from learnloop.models.evaluator import load_fashion_evaluator, reference_stats

        if self.evaluator is None:
            if not evaluator_available():
                return {}
            self.evaluator, self.reference = load_fashion_evaluator(), reference_stats("test")
        mu_f, sigma_f = feature_stats(self.evaluator.features(images))
        return {"fid": fid_from_stats(*self.reference, mu_f, sigma_f)}


def check_config(cfg: GanConfig) -> None:
    if cfg.regularizer in ("gp", "r1") and cfg.d_norm == "batch":
        raise UserError(f"regularizer={cfg.regularizer} needs per-sample input gradients: set d_norm=layer or none "
                        "(BatchNorm mixes the samples of a batch)")
    if cfg.regularizer == "clip" and cfg.spectral_norm:
        raise UserError("weight clipping and spectral norm both constrain D; choose one")


def build_models(cfg: GanConfig):
    return build_gan(cfg.arch, cfg.z_dim, 10 if cfg.conditional else 0, cfg.width, cfg.g_batchnorm, cfg.d_norm,
                     cfg.spectral_norm)


def build_task(cfg: GanConfig, monitor: bool = True) -> AdversarialTask:
    check_config(cfg)
    g, d = build_models(cfg)
    monitor_fn = FIDMonitor() if monitor and cfg.monitor_samples > 0 else None
    return AdversarialTask(
        g, d, z_dim=cfg.z_dim, num_classes=10 if cfg.conditional else 0, loss=cfg.loss,
        regularizer=cfg.regularizer, reg_weight=cfg.reg_weight, clip_value=cfg.clip_value, n_critic=cfg.n_critic,
        optimizer=cfg.optimizer, lr_g=cfg.lr_g, lr_d=cfg.lr_d, betas=(cfg.beta1, cfg.beta2),
        ema_decay=cfg.ema_decay, monitor_fn=monitor_fn, monitor_samples=cfg.monitor_samples,
        collapse_patience=cfg.collapse_patience, time_budget_s=60 * cfg.time_budget_min)


def load_generator(cfg: GanConfig, checkpoint: Path) -> torch.nn.Module:
    """The sampling generator (EMA copy when the run used one) from a GAN checkpoint."""
    g, _ = build_models(cfg)
    modules = load_state(checkpoint)["modules"]
    g.load_state_dict(modules["g_ema"] if "g_ema" in modules else modules["g"])
    g.eval()
    return g


# --- training and evaluation ------------------------------------------------------------------------------
def fit_gan(cfg: GanConfig, ctx: RunContext) -> Learner:
    data = load_train_images(cfg, ctx.seed)
    task = build_task(cfg)
    if task.monitor_fn is not None and not evaluator_available():
        ctx.say("evaluator weights missing (learnloop/assets/fashion_evaluator.safetensors): no per-epoch FID, "
                "the best checkpoint is the last one")
    loader = RandomBatches(data.images, data.labels, cfg.batch_size, cfg.steps_per_epoch, ctx.seed)
    ctx.say(f"{cfg.arch} GAN, {cfg.loss} loss, regularizer {cfg.regularizer}, spectral norm {cfg.spectral_norm}, "
            f"{'conditional, ' if cfg.conditional else ''}{len(data)} training images, {cfg.epochs} x "
            f"{cfg.steps_per_epoch} batches of {cfg.batch_size}")
    monitor = "val_fid" if task.monitor_fn is not None else None
    learner = ctx.learner(task, loader, None, epochs=cfg.epochs, name=STAGE, schedule=ScheduleConfig(kind=cfg.schedule),
                          monitor=monitor, mode="min")
    ctx.fit(learner)
    if task.stop_message:
        ctx.say(task.stop_message)
    ctx.outputs.update(model=task.sampler, task=task, learner=learner)
    return learner


def class_accuracy(evaluator, generator, cfg: GanConfig, n: int, seed: int = 0) -> dict:
    """cGAN: how often the evaluation classifier recognises the requested class (overall and per class)."""
    labels = torch.arange(n) % 10
    images = to_uint8(generate(generator, n, cfg.z_dim, 10, labels=labels, seed=seed), (-1, 1))
    pred = evaluator.probs(images).argmax(1)
    hit = (pred == labels).float()
    out = {"class_accuracy": float(hit.mean())}
    out.update({f"class_accuracy_{c}": float(hit[labels == c].mean()) for c in range(10)})
    return out


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


def evaluate_checkpoints(cfg: GanConfig, ctx: RunContext, checkpoint_dir: Path | None = None) -> dict:
    """Full metric set for the `best` and `last` checkpoints (prefixes best_ / last_), floor and ceiling."""
    checkpoint_dir = checkpoint_dir or ctx.run.checkpoints / STAGE
    if not (checkpoint_dir / "last.safetensors").is_file():
        raise UserError(f"{checkpoint_dir}: no GAN checkpoint to evaluate (last.safetensors)")
    if not evaluator_available():
        raise UserError("the evaluator weights learnloop/assets/fashion_evaluator.safetensors are missing; "
                        "run `python bench/train_evaluator.py` to create them")
    from learnloop.evaluation.generative import evaluate_images, format_report
    from learnloop.models.evaluator import load_fashion_evaluator

    evaluator = load_fashion_evaluator()
    metrics: dict = {}
    for which in ("best", "last"):
        path = checkpoint_dir / f"{which}.safetensors"
        state = load_state(path)
        g = load_generator(cfg, path)
        fake = to_uint8(generate(g, cfg.eval_samples, cfg.z_dim, 10 if cfg.conditional else 0, seed=ctx.seed + 77),
                        (-1, 1))
        result = evaluate_images(fake, real_split="test", n=cfg.eval_samples, k=cfg.k, seed=ctx.seed)
        ctx.say(f"{which} checkpoint (epoch {state['epoch']}):\n{format_report(result)}")
        for key in ("floor", "ceiling", "protocol"):
            if key in result and which == "best":
                metrics.update(_flatten(f"{key}_", result[key]) if isinstance(result[key], dict) else {})
        metrics.update(_flatten(f"{which}_", {k: v for k, v in result.items()
                                              if k not in ("floor", "ceiling", "protocol")}))
        metrics[f"{which}_epoch"] = state["epoch"]
        if cfg.conditional:
            metrics.update(_flatten(f"{which}_", class_accuracy(evaluator, g, cfg, cfg.eval_samples, ctx.seed)))
        save_image_grid(fake[:100], ctx.run.plots / f"samples_{which}.png", nrow=10)
    return metrics


def _training_summary(learner: Learner, task: AdversarialTask) -> dict:
    out = {"epochs_trained": learner.epoch, "steps": learner.step, "generator_steps": task.g_steps,
           "diverged": 1.0 if task.stop_message else 0.0}
    if learner.best is not None:
        out["best_val_fid"] = learner.best
    if learner.stop_reason:
        out["stop_reason"] = learner.stop_reason
    if learner.history:
        last = learner.history[-1]
        out.update({k: v for k, v in last.items() if k.startswith(("train_", "val_"))})
    return out


def train_gan(cfg: GanConfig, ctx: RunContext) -> dict:
    learner = fit_gan(cfg, ctx)
    metrics = _training_summary(learner, learner.task)
    if learner.history:
        plot_curves(learner.history, ctx.run.plots / "curves.png", title=ctx.run.path.parent.name)
    if evaluator_available():
        metrics.update(evaluate_checkpoints(cfg, ctx))
    else:
        ctx.say("evaluator weights missing: skipping FID/KID/precision/recall (run bench/train_evaluator.py, "
                "then `learnloop eval RUN_DIR`)")
    return metrics


def evaluate_gan(cfg: GanConfig, ctx: RunContext) -> dict:
    return evaluate_checkpoints(cfg, ctx)


_TARGET = "precision >= 0.6, recall >= 0.3 (k=5, evaluator features); every class >= 3% of 10k samples"


def _gan_recipe(name: str, summary: str, target: str = _TARGET, **defaults) -> None:
    config = gan_config(name.title().replace("-", "") + "Config", **defaults)
    recipe(name, summary, config, family="gan", target=target, main_metric="best_fid",
           benchmark="python bench/bench_gans.py")(train_gan)
    attach(name, evaluate=evaluate_gan)


_gan_recipe("gan-mlp", "MLP generator and discriminator, non-saturating BCE loss (Goodfellow et al., 2014)",
            target="FID well below the floor (a baseline for the other GANs)", arch="mlp", d_norm="none",
            batch_size=64, epochs=15)
_gan_recipe("dcgan", "DCGAN (Radford et al., 2016): transposed-conv G, strided-conv D, BatchNorm, BCE loss")
_gan_recipe("wgan-clip", "WGAN (Arjovsky et al., 2017): Wasserstein loss + weight clipping, RMSprop, n_critic=5",
            target="trains without collapse; FID below gan-mlp's", loss="wasserstein", regularizer="clip",
            optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5, n_critic=5, epochs=15)
_gan_recipe("wgan-gp", "WGAN-GP (Gulrajani et al., 2017): Wasserstein loss + gradient penalty, no BN in the critic",
            loss="wasserstein", regularizer="gp", reg_weight=10.0, d_norm="layer", n_critic=5, lr_g=1e-4, lr_d=1e-4,
            beta1=0.0, beta2=0.9, epochs=15)
_gan_recipe("sngan", "SNGAN (Miyato et al., 2018): hinge loss + spectral norm in D (power iteration from scratch)",
            loss="hinge", spectral_norm=True, d_norm="none", lr_d=4e-4, epochs=45)
_gan_recipe("cgan", "conditional DCGAN (Mirza & Osindero, 2014): one-hot class concatenated to z and D's input",
            target="the evaluator recognises the requested class in >= 0.85 of samples", conditional=True)


# --- studies of a trained generator ----------------------------------------------------------------------
def _gan_config_of(run: RunFolder) -> GanConfig:
    """The GanConfig part of a run's config.json (studies add fields of their own)."""
    names = {f.name for f in dataclasses.fields(GanConfig)}
    return from_dict(GanConfig, {k: v for k, v in run.config()["config"].items() if k in names})


def generator_for_study(cfg, ctx: RunContext) -> tuple[torch.nn.Module, GanConfig, dict]:
    """A trained generator: loaded from `cfg.generator_run` (any GAN recipe's run folder), or trained now."""
    if cfg.generator_run:
        run = RunFolder.open(cfg.generator_run)
        gcfg = _gan_config_of(run)
        path = run.checkpoints / STAGE / f"{cfg.checkpoint}.safetensors"
        if not path.is_file():
            raise UserError(f"{path}: not found; generator_run must be a finished GAN run folder")
        ctx.say(f"generator: {path}")
        return load_generator(gcfg, path), gcfg, {}
    learner = fit_gan(cfg, ctx)
    metrics = _training_summary(learner, learner.task)
    path = learner.checkpoint_path(cfg.checkpoint)
    return load_generator(cfg, path), cfg, metrics


def _require_evaluator():
    if not evaluator_available():
        raise UserError("this study needs the evaluator weights learnloop/assets/fashion_evaluator.safetensors; "
                        "run `python bench/train_evaluator.py` to create them")
    from learnloop.models.evaluator import load_fashion_evaluator

    return load_fashion_evaluator()


_STUDY_FIELDS = {
    "generator_run": (str, param("", "a finished GAN run folder to study (empty: train one first with these "
                                     "settings)")),
    "checkpoint": (str, param("best", "which checkpoint of the generator", choices=("best", "last"))),
}


def study_config(name: str, extra: dict, **defaults) -> type:
    base = gan_config(name + "Base", **defaults)
    fields = [(k, tp, f) for k, (tp, f) in {**_STUDY_FIELDS, **extra}.items()]
    return dataclasses.make_dataclass(name, fields, bases=(base,))


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
TruncationConfig = study_config("TruncationConfig", {
    "truncations": (tuple[float, ...], param((0.0, 2.0, 1.5, 1.0, 0.75, 0.5, 0.25),
                                             "truncation thresholds t, loosest first (0: no truncation)", min=0.0)),
    "study_samples": (int, param(5000, "samples per truncation level", min=100)),
})


def _monotone_fraction(values: list[float], rising: bool) -> float:
    steps = list(itertools.pairwise(values))
    good = sum((b > a) if rising else (b < a) for a, b in steps)
    return good / max(len(steps), 1)


@recipe("truncation", "truncation trick (Brock et al., 2019): precision vs recall as the noise is truncated",
        TruncationConfig, family="gan", main_metric="precision_gain",
        target="precision rises and recall falls as truncation tightens")
def truncation_study(cfg, ctx: RunContext) -> dict:
    from learnloop.evaluation.generative import evaluate_images

    _require_evaluator()
    g, gcfg, metrics = generator_for_study(cfg, ctx)
    levels = sorted(cfg.truncations, key=lambda t: -math.inf if t <= 0 else -t)   # none, then tighter
    rows = []
    for t in levels:
        fake = to_uint8(generate(g, cfg.study_samples, gcfg.z_dim, 10 if gcfg.conditional else 0,
                                 truncation=t if t > 0 else None, seed=ctx.seed + 5), (-1, 1))
        r = evaluate_images(fake, k=cfg.k, seed=ctx.seed, with_floor=False, with_ceiling=False)
        rows.append({"t": t, **{k: r[k] for k in ("fid", "precision", "recall", "density", "coverage")},
                     "min_class_fraction": min(r["class_hist"])})
        tag = "none" if t <= 0 else f"{t:g}"
        ctx.say(f"truncation {tag}: precision {r['precision']:.3f} recall {r['recall']:.3f} FID {r['fid']:.2f}")
        save_image_grid(fake[:64], ctx.run.plots / f"samples_truncation_{tag}.png", nrow=8)
        for k in ("fid", "precision", "recall", "density", "coverage", "min_class_fraction"):
            metrics[f"t{tag}_{k}"] = rows[-1][k]
    from learnloop.utils.plots import plot_lines

    plot_lines({"precision vs recall": ([r["recall"] for r in rows], [r["precision"] for r in rows])},
               ctx.run.plots / "truncation_precision_recall.png", "recall (diversity)", "precision (fidelity)",
               "truncation: " + ", ".join("none" if r["t"] <= 0 else f"{r['t']:g}" for r in rows))
    xs = list(range(len(rows)))
    plot_lines({k: (xs, [r[k] for r in rows]) for k in ("precision", "recall", "density", "coverage")},
               ctx.run.plots / "truncation_sweep.png", "truncation level index (0 = none, tighter to the right)",
               "value", "truncation sweep")
    metrics.update({
        "precision_rises": _monotone_fraction([r["precision"] for r in rows], True),
        "recall_falls": _monotone_fraction([r["recall"] for r in rows], False),
        "precision_gain": rows[-1]["precision"] - rows[0]["precision"],
        "recall_loss": rows[0]["recall"] - rows[-1]["recall"]})
    return metrics


# bias probe ------------------------------------------------------------------------------------------------
BiasProbeConfig = study_config("BiasProbeConfig", {
    "study_samples": (int, param(10000, "generated samples to probe", min=100)),
    "tolerance": (float, param(0.3, "flag a class/bin whose frequency ratio generated/real is outside 1 +- this",
                               min=0.0, max=1.0)),
    "min_fraction": (float, param(0.03, "flag a class below this fraction of the samples", min=0.0, max=1.0)),
})


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


@recipe("gan-bias-probe", "probe a GAN's mode coverage and biases with the evaluation classifier", BiasProbeConfig,
        family="gan", main_metric="min_class_fraction",
        target="all 10 classes present, none under 3% of 10k samples; flags under/over-represented modes")
def bias_probe(cfg, ctx: RunContext) -> dict:
    evaluator = _require_evaluator()
    g, gcfg, metrics = generator_for_study(cfg, ctx)
    fake = to_uint8(generate(g, cfg.study_samples, gcfg.z_dim, 10 if gcfg.conditional else 0, seed=ctx.seed + 9),
                    (-1, 1))
    real = load_fashion_mnist("test", cfg.data_path or None)
    p_fake, p_real = evaluator.probs(fake), evaluator.probs(real.images)
    # the classifier's own errors cancel when both sides are seen through it
    h_fake = torch.bincount(p_fake.argmax(1), minlength=10).double() / len(fake)
    h_real = torch.bincount(p_real.argmax(1), minlength=10).double() / len(real)
    classes = frequency_table(h_real, h_fake, list(FASHION_CLASS_NAMES), cfg.tolerance, cfg.min_fraction)
    report = [_markdown(classes, "class frequencies (evaluation classifier's argmax)")]
    conf_fake, conf_real = p_fake.max(1).values, p_real.max(1).values
    metrics.update({"min_class_fraction": float(h_fake.min()), "classes_present": int((h_fake > 0).sum()),
                    "classes_under_min_fraction": int((h_fake < cfg.min_fraction).sum()),
                    "class_tv_distance": float(0.5 * (h_fake - h_real).abs().sum()),
                    "low_confidence_fraction": float((conf_fake < 0.5).float().mean()),
                    "real_low_confidence_fraction": float((conf_real < 0.5).float().mean())})
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
                      ctx.run.plots / f"bias_{name}.png", "fraction", f"{name}: real quartile bins")
    metrics["attribute_bins_flagged"] = flagged_bins
    _grouped_bars({"real (classified)": h_real.tolist(), "generated": h_fake.tolist()}, list(FASHION_CLASS_NAMES),
                  ctx.run.plots / "bias_classes.png", "fraction", "class frequencies", hline=cfg.min_fraction)
    text = "\n".join(report)
    from learnloop.utils.io import write_text

    write_text(ctx.run.plots / "bias_probe.md", text)
    ctx.say(text)
    return metrics


# controllable generation ---------------------------------------------------------------------------------------
ControllableConfig = study_config("ControllableConfig", {
    "edit_samples": (int, param(200, "latent vectors to edit", min=10)),
    "edit_steps": (int, param(40, "gradient steps in z", min=1)),
    "edit_lr": (float, param(0.1, "step length in z-space (normalised gradient steps)", min=0.0)),
    "z_anchor": (float, param(1.0, "weight of ||z - z0||^2 / dim keeping the edit close to the start", min=0.0)),
    "guide_epochs": (int, param(2, "epochs of the attribute (class) classifier that guides the edit", min=1)),
    "guide_subset": (int, param(20000, "training images for the guide classifier", min=1000)),
})


def train_guide_classifier(cfg, ctx: RunContext) -> torch.nn.Module:
    """The attribute classifier used for the gradient: a small CNN on images in G's range [-1, 1], trained
    here so that success is judged by a *different* network (the evaluator), not by the one being climbed."""
    from learnloop.data.loader import TensorLoader
    from learnloop.models.classic import SmallCNN
    from learnloop.tasks.classification import Classification

    data = load_fashion_mnist("train", cfg.data_path or None)
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(ctx.seed + 11))[:cfg.guide_subset]
    x, y = data.images[keep], data.labels[keep]

    def transform(batch):
        return batch[0].float().div(127.5).sub(1.0), batch[1]

    model = SmallCNN(1, 10, dropout=0.2)
    learner = Learner(Classification(model, 10, lr=2e-3), TensorLoader((x, y), 128, True, seed=ctx.seed,
                                                                       transform=transform),
                      epochs=cfg.guide_epochs, schedule=ScheduleConfig(kind="one-cycle"), monitor=None)
    learner.fit()
    ctx.say(f"guide classifier: train accuracy {learner.history[-1].get('train_accuracy', float('nan')):.3f}")
    model.eval()
    model.requires_grad_(False)
    return model


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


@recipe("controllable", "controllable generation: move z along an attribute classifier's gradient", ControllableConfig,
        family="gan", main_metric="class_edit_success",
        target="class edits succeed (judged by the evaluator) with small changes of the other attributes")
def controllable(cfg, ctx: RunContext) -> dict:
    import torch.nn.functional as F

    evaluator = _require_evaluator()
    g, gcfg, metrics = generator_for_study(cfg, ctx)
    if gcfg.conditional:
        raise UserError("controllable generation edits an unconditional generator; choose a non-conditional run")
    g.eval()
    g.requires_grad_(False)
    guide = train_guide_classifier(cfg, ctx)
    gen = torch.Generator().manual_seed(ctx.seed + 13)
    n = cfg.edit_samples
    z0 = torch.randn(n, gcfg.z_dim, generator=gen)
    with torch.no_grad():
        x0 = to_uint8(g(z0), (-1, 1))
    c0 = evaluator.probs(x0).argmax(1)
    real_attr = pixel_attributes(load_fashion_mnist("test", cfg.data_path or None).images)
    std = {k: float(v.std()) for k, v in real_attr.items()}
    a0 = pixel_attributes(x0)

    # 1. class edit: log p_guide(target | G(z)), target != current class
    target = (c0 + torch.randint(1, 10, (n,), generator=gen)) % 10
    z1 = edit_latents(g, z0, lambda x: F.log_softmax(guide(x), 1).gather(1, target[:, None]).squeeze(1),
                      cfg.edit_steps, cfg.edit_lr, cfg.z_anchor)
    with torch.no_grad():
        x1 = to_uint8(g(z1), (-1, 1))
    c1 = evaluator.probs(x1).argmax(1)
    a1 = pixel_attributes(x1)
    metrics.update({
        "class_edit_success": float((c1 == target).float().mean()),
        "class_edit_guide_success": float((guide(x1.float() / 127.5 - 1).argmax(1) == target).float().mean()),
        "class_edit_z_distance": float((z1 - z0).norm(dim=1).mean()),
        **{f"class_edit_delta_{k}_std": float((a1[k] - a0[k]).abs().mean() / std[k]) for k in a0}})

    # 2. attribute edit: brightness up by one real standard deviation (a pixel statistic is its own scorer)
    goal = a0["brightness"] + std["brightness"]
    z2 = edit_latents(g, z0, lambda x: -((x.flatten(1).add(1).div(2).mean(1) - goal) / std["brightness"]).pow(2),
                      cfg.edit_steps, cfg.edit_lr, cfg.z_anchor)
    with torch.no_grad():
        x2 = to_uint8(g(z2), (-1, 1))
    a2, c2 = pixel_attributes(x2), evaluator.probs(x2).argmax(1)
    metrics.update({
        "brightness_edit_success": float(((a2["brightness"] - a0["brightness"]) >= 0.5 * std["brightness"])
                                         .float().mean()),
        "brightness_edit_mean_change_std": float((a2["brightness"] - a0["brightness"]).mean() / std["brightness"]),
        "brightness_edit_class_changed": float((c2 != c0).float().mean()),
        "brightness_edit_delta_ink_area_std": float((a2["ink_area"] - a0["ink_area"]).abs().mean() / std["ink_area"]),
        "brightness_edit_z_distance": float((z2 - z0).norm(dim=1).mean())})
    rows = min(8, n)
    grid = torch.stack([x0[:rows], x1[:rows], x2[:rows]], 1).flatten(0, 1)
    save_image_grid(grid, ctx.run.plots / "edits.png", nrow=3)
    ctx.say("edits.png: columns = original, class edit (targets "
            + ", ".join(FASHION_CLASS_NAMES[int(t)] for t in target[:rows]) + "), brighter")
    ctx.say(", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if "edit" in k and isinstance(v, float)))
    return metrics


def evaluate_study(cfg, ctx: RunContext) -> dict:
    """`learnloop eval` of a study: the generator it trained, or the one it loaded from `generator_run`."""
    if not cfg.generator_run:
        return evaluate_checkpoints(cfg, ctx)
    run = RunFolder.open(cfg.generator_run)
    return evaluate_checkpoints(_gan_config_of(run), ctx, run.checkpoints / STAGE)


for _study in ("truncation", "gan-bias-probe", "controllable"):
    attach(_study, evaluate=evaluate_study)
