"""What the diffusion recipes share: the config sections (`unet`, `sampler`, `curve`, `train`, `data`,
`eval`), the training images in [-1, 1] with a fixed validation set, the DiffusionTask with its callbacks
(EMA of the U-Net's weights, per-epoch sample grid), the sampling model of a checkpoint (its EMA weights)
and seeded generation with any sampler.

The U-Net is learnloop.models.unet.UNet, the process and samplers learnloop.models.diffusion, the loss
learnloop.losses.diffusion, the step logic learnloop.tasks.diffusion.DiffusionTask.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from learnloop.data.loader import RandomBatches, TensorLoader
from learnloop.data.vision import load_fashion_mnist
from learnloop.engine.callbacks import SampleGrid
from learnloop.engine.checkpoint import load_module_state
from learnloop.engine.ema import EMA
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import CorruptFileError, UserError
from learnloop.evaluation.generative import GenerativeEvalConfig
from learnloop.models.diffusion import PREDICTIONS, SAMPLERS, SCHEDULES, SPACINGS, VARIANCES, Diffusion, sample
from learnloop.models.unet import UNet
from learnloop.recipes.base import Bundle, Stage
from learnloop.recipes.config import param, section
from learnloop.tasks.diffusion import DiffusionTask, fixed_validation
from learnloop.utils.images import to_uint8

STAGE = ""                   # single stage: checkpoints/{best,last}.safetensors
EMA_NAME = "ema_model"       # the EMA callback's state in every checkpoint (callbacks/ema_model/shadow)
GRID_SEED = 1234


# --- config --------------------------------------------------------------------------------------------------
@dataclass
class UNetConfig:
    """The noise-prediction U-Net (learnloop.models.unet): levels at 28, 14, 7 for Fashion-MNIST."""

    base_channels: int = param(32, "channels of the first level (the time embedding has 4x this)", min=4, max=512)
    channel_mult: tuple[int, ...] = param((1, 2, 2), "channels per level as multiples of base_channels; the "
                                          "image sides must be divisible by 2^(levels-1)", min=1, max=16)
    num_res_blocks: int = param(1, "ResBlocks per level (the decoder has one more)", min=1, max=8)
    attention_resolutions: tuple[int, ...] = param((7,), "feature-map sides with self-attention (the middle "
                                                   "block always has it); empty: none", min=1)
    attention_heads: int = param(4, "attention heads", min=1, max=64)
    dropout: float = param(0.0, "dropout in the ResBlocks (Ho et al. used 0.1 on CIFAR-10)", min=0.0, max=0.9)
    norm_groups: int = param(8, "GroupNorm groups (must divide every level's channels)", min=1, max=512)


@dataclass
class SamplerConfig:
    """How images are drawn for the grids, the evaluation and `predict` (learnloop.models.diffusion.sample)."""

    kind: str = param("ddim", "ddpm: ancestral sampling (Ho et al.); ddim: Song et al. (2021)", choices=SAMPLERS)
    steps: int = param(50, "sampling steps S <= T (ddpm with S < T: the respaced process of Nichol & "
                           "Dhariwal, 2021)", min=1, max=100_000)
    eta: float = param(0.0, "DDIM eta: 0 deterministic, 1 = DDPM's posterior variance", min=0.0, max=1.0)
    spacing: str = param("trailing", "which timesteps (Lin et al., 2024, Table 2)", choices=SPACINGS)
    steps_offset: int = param(0, "leading spacing only: added to every timestep (Stable Diffusion: 1)", min=0)
    variance: str = param("beta_tilde", "ddpm: sigma_t^2 = beta_tilde_t (posterior) or beta_t", choices=VARIANCES)
    clip_x0: bool = param(True, "clip the predicted x_0 to [-1, 1] at every step")
    batch_size: int = param(64, "images per sampling batch (64 is fastest on a CPU)", min=1, max=10_000)


@dataclass
class CurveConfig:
    """FID, precision and recall vs the number of sampling steps (each point: `samples` images scored with
    the `eval` protocol at that N, beside its floor and ceiling)."""

    ddpm_steps: tuple[int, ...] = param((100, 1000), "DDPM step counts (empty: none; each <= T)", min=1)
    ddim_steps: tuple[int, ...] = param((10, 20, 50, 100), "DDIM step counts (empty: none; each <= T)", min=1)
    samples: int = param(80, "images per point (0: no curve); the cost is samples x sum of steps U-Net calls",
                         min=0, max=60_000)


@dataclass
class DiffusionTrainConfig:
    """How the U-Net is trained: `steps_per_epoch` batches per epoch, random t per image."""

    epochs: int = param(200, "epochs (each `steps_per_epoch` batches)", min=1, max=100_000)
    steps_per_epoch: int = param(250, "batches per epoch (sampled without replacement, reshuffled per epoch)", min=1)
    batch_size: int = param(64, "batch size", min=2)
    optim: OptimConfig = section(OptimConfig, "optimizer", name="adam", lr=5e-4)
    schedule: ScheduleConfig = section(ScheduleConfig, "learning-rate schedule")
    accumulate: int = param(1, "micro-batches per optimizer step (gradient accumulation)", min=1, max=4096)
    clip_grad_norm: float = param(1.0, "clip the global gradient norm to this (Ho et al.: 1; 0: off)", min=0.0)
    precision: str = param("32", "32 or bf16 autocast (16 needs CUDA)", choices=("32", "bf16", "16"))
    patience: int = param(0, "early stopping: epochs without a lower val_loss (0: off)", min=0)
    time_budget_min: float = param(120.0, "stop after the epoch in which training has used this many CPU minutes "
                                   "(process time of all threads, validation and sample grids included; 0: off)",
                                   min=0.0)


@dataclass
class DiffusionDataConfig:
    dataset: str = param("fashion-mnist", "training images, scaled to [-1, 1] (the evaluator is Fashion-MNIST's)",
                         choices=("fashion-mnist",))
    path: str = param("", "folder with the dataset's files (default: the standard search order)")
    subset: int = param(0, "train on only this many images (0: all but the validation images)", min=0)
    val_samples: int = param(1000, "training images held out for val_loss (fixed t and noise; 0: none)", min=0,
                             max=20_000)


@dataclass
class DiffusionConfig:
    schedule: str = param("linear", "beta schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal)",
                          choices=SCHEDULES)
    timesteps: int = param(1000, "diffusion steps T", min=2, max=100_000)
    beta_start: float = param(1e-4, "linear schedule: beta_0", min=1e-8, max=0.5)
    beta_end: float = param(0.02, "linear schedule: beta_{T-1}", min=1e-8, max=0.999)
    cosine_s: float = param(0.008, "cosine schedule: offset s", min=1e-6, max=1.0)
    prediction: str = param("eps", "what the U-Net predicts: eps (Ho et al.) or v (Salimans & Ho, 2022)",
                            choices=PREDICTIONS)
    min_snr_gamma: float = param(0.0, "Min-SNR-gamma loss weighting (Hang et al., 2023; 5 there; 0: off)",
                                 min=0.0, max=1e4)
    ema_decay: float = param(0.999, "EMA of the U-Net's weights for sampling and val_loss (0: off)", min=0.0,
                             max=0.99999)
    grid_samples: int = param(64, "samples in the per-epoch grid (fixed seed, the `sampler` settings)", min=1,
                              max=1024)
    unet: UNetConfig = section(UNetConfig, "the U-Net")
    sampler: SamplerConfig = section(SamplerConfig, "sampling")
    curve: CurveConfig = section(CurveConfig, "the steps curve of the evaluation")
    train: DiffusionTrainConfig = section(DiffusionTrainConfig, "training")
    data: DiffusionDataConfig = section(DiffusionDataConfig, "data")
    eval: GenerativeEvalConfig = section(GenerativeEvalConfig, "evaluation of the EMA weights with the `sampler` "
                                         "settings", samples=1000)

    MOVED = {"T": "timesteps", "steps": "sampler.steps", "eta": "sampler.eta", "spacing": "sampler.spacing",
             "time_budget_min": "train.time_budget_min", "eval_samples": "eval.samples"}


def check_config(cfg: DiffusionConfig) -> None:
    T = cfg.timesteps
    if cfg.schedule == "linear" and cfg.beta_start > cfg.beta_end:
        raise UserError(f"beta_start ({cfg.beta_start}) must not exceed beta_end ({cfg.beta_end})")
    for key, values in (("sampler.steps", (cfg.sampler.steps,)), ("curve.ddpm_steps", cfg.curve.ddpm_steps),
                        ("curve.ddim_steps", cfg.curve.ddim_steps)):
        if any(s > T for s in values):
            raise UserError(f"{key}: sampling steps must be <= timesteps T={T}, got {max(values)} "
                            f"(e.g. --set {key}={T})")
    if cfg.sampler.steps_offset and cfg.sampler.spacing != "leading":
        raise UserError("sampler.steps_offset applies to spacing=leading only")
    if cfg.sampler.spacing == "leading" and (T // cfg.sampler.steps) * (cfg.sampler.steps - 1) \
            + cfg.sampler.steps_offset > T - 1:
        raise UserError(f"sampler.steps_offset={cfg.sampler.steps_offset} puts a timestep above T-1={T - 1}")
    for n, what in ((cfg.eval.samples, "eval.samples"), (cfg.curve.samples, "curve.samples")):
        if n and (cfg.eval.k >= n or cfg.eval.splits > n):
            raise UserError(f"{what}: need eval.k < samples and eval.splits <= samples, got k={cfg.eval.k}, "
                            f"splits={cfg.eval.splits}, samples={n}")


# --- the process, the network, the data ---------------------------------------------------------------------------
def build_diffusion(cfg: DiffusionConfig) -> Diffusion:
    return Diffusion.from_schedule(cfg.schedule, cfg.timesteps, **(
        {"beta_start": cfg.beta_start, "beta_end": cfg.beta_end} if cfg.schedule == "linear" else {"s": cfg.cosine_s}))


def build_unet(cfg: DiffusionConfig, info: dict) -> UNet:
    c, h, w = info["shape"]
    u = cfg.unet
    return UNet((h, w), c, base_channels=u.base_channels, channel_mult=u.channel_mult, num_res_blocks=u.num_res_blocks,
                attention_resolutions=u.attention_resolutions, attention_heads=u.attention_heads, dropout=u.dropout,
                norm_groups=u.norm_groups)


def split_images(cfg, seed: int):
    """(validation images, training images) of Fashion-MNIST's training split: `data.val_samples` held out by a
    permutation seeded with the run's seed, then the first `data.subset` of the rest (as ddpm splits)."""
    images = load_fashion_mnist("train", cfg.data.path or None)
    n_val = cfg.data.val_samples
    if n_val >= len(images):
        raise UserError(f"data.val_samples={n_val} leaves no training images (the split has {len(images)})")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    val, train = images.subset(order[:n_val]), images.subset(order[n_val:])
    if 0 < cfg.data.subset < len(train):
        train = train.subset(torch.arange(cfg.data.subset))
    return val, train


def diffusion_bundle(cfg: DiffusionConfig, seed: int, train: bool = True) -> Bundle:
    """Training batches in [-1, 1] (`RandomBatches`), the validation set (t, eps, images, labels) with fixed
    t and eps, and the info the model is built from. The validation images are held out of the training
    split by a seeded permutation; `data.subset` then limits the training images."""
    check_config(cfg)
    val_part, train_part = split_images(cfg, seed)
    n_val = len(val_part)
    info = {"dataset": cfg.data.dataset, "shape": list(train_part.shape), "classes": list(train_part.classes)}
    if not train:
        return Bundle(info=info)
    loader = RandomBatches(train_part.images, train_part.labels, cfg.train.batch_size, cfg.train.steps_per_epoch,
                           seed)
    val = None
    if n_val:
        x = val_part.images.float().div_(127.5).sub_(1.0)
        t, noise = fixed_validation(x, cfg.timesteps, seed + 1)
        val = TensorLoader([t, noise, x, val_part.labels], batch_size=max(cfg.train.batch_size, 250))
    return Bundle(train=loader, val=val, info=info)


# --- sampling ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(model, diffusion: Diffusion, cfg: DiffusionConfig, n: int, seed: int, *, kind: str | None = None,
             steps: int | None = None) -> torch.Tensor:
    """n images in [-1, 1] from `model` with the `sampler` settings (`kind` and `steps` override them), in
    batches of sampler.batch_size, every random number from one generator seeded with `seed`."""
    if n < 1:
        raise UserError(f"need n >= 1 samples, got {n}")
    s = cfg.sampler
    kind = kind or s.kind
    g = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    shape = (model.in_channels, *model.image_size)
    try:
        out = [sample(model, diffusion, (min(s.batch_size, n - i), *shape), sampler=kind, steps=steps or s.steps,
                      eta=s.eta if kind == "ddim" else 0.0, spacing=s.spacing,
                      steps_offset=s.steps_offset if s.spacing == "leading" else 0, variance=s.variance,
                      prediction=cfg.prediction, clip=s.clip_x0, generator=g, device=device).cpu()
               for i in range(0, n, s.batch_size)]
    finally:
        model.train(was)
    return torch.cat(out)


def sample_uint8(model, diffusion: Diffusion, cfg: DiffusionConfig, n: int, seed: int, **options) -> torch.Tensor:
    return to_uint8(generate(model, diffusion, cfg, n, seed, **options), (-1, 1))


def build_task(cfg: DiffusionConfig, info: dict) -> DiffusionTask:
    """The U-Net, its process and optimizer, the EMA callback (validating with the EMA weights) and the
    per-epoch sample grid drawn from the EMA weights with a fixed seed."""
    model, diffusion = build_unet(cfg, info), build_diffusion(cfg)
    ema = EMA("model", decay=cfg.ema_decay, warmup=True, validate_with_ema=True, name=EMA_NAME) \
        if cfg.ema_decay > 0 else None

    def grid(learner) -> torch.Tensor:
        net = ema.module if ema is not None else model
        return generate(net, diffusion, cfg, cfg.grid_samples, GRID_SEED)

    callbacks = ([ema] if ema is not None else []) + [SampleGrid(grid, value_range=(-1.0, 1.0))]
    return DiffusionTask(model, diffusion, cfg.train.optim, prediction=cfg.prediction, min_snr_gamma=cfg.min_snr_gamma,
                         callbacks=callbacks, time_budget_s=60 * cfg.train.time_budget_min)


def diffusion_stage(cfg: DiffusionConfig, info: dict) -> Stage:
    monitor = "val_loss" if cfg.data.val_samples else None
    return Stage(STAGE, lambda trained: build_task(cfg, info), cfg.train, monitor=monitor, mode="min",
                 callbacks=lambda task: task.callbacks)


def sampling_model(run, which: str = "best", stage: str = STAGE) -> tuple[torch.nn.Module, dict]:
    """(the denoiser of `stage` with the `which` checkpoint's sampling weights, the EMA copy when the run
    kept one, in eval mode; the checkpoint state). `best` falls back to `last`."""
    state, path = run.checkpoint(stage, which), run.checkpoint_path(stage, which)
    if state is None and which == "best":
        state, path = run.checkpoint(stage, "last"), run.checkpoint_path(stage, "last")
    if state is None:
        raise UserError(f"{path}: no checkpoint; finish the run with `learnloop resume {run.path}`")
    model = copy.deepcopy(run.tasks[stage].model)
    if run.cfg.ema_decay > 0:
        callbacks = state.get("callbacks") if isinstance(state.get("callbacks"), dict) else {}
        entry = callbacks.get(EMA_NAME)
        if not isinstance(entry, dict) or not isinstance(entry.get("shadow"), dict):
            raise CorruptFileError(f"{path}: checkpoint has no EMA weights '{EMA_NAME}' although ema_decay > 0")
        load_module_state(model, entry["shadow"], path, f"callbacks.{EMA_NAME}.shadow")
    else:
        modules = state.get("modules") if isinstance(state.get("modules"), dict) else {}
        load_module_state(model, modules.get("model"), path, "modules.model")
    model.eval()
    return model, state


def eval_protocol(cfg: DiffusionConfig, samples: int) -> GenerativeEvalConfig:
    """The `eval` protocol with another sample count (the steps curve's)."""
    return dataclasses.replace(cfg.eval, samples=samples)
