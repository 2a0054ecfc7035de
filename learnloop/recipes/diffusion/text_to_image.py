"""`text-to-image`: latent diffusion in miniature (Rombach et al., 2022) with classifier-free guidance (Ho &
Salimans, 2022), built from three trained parts: a `vae` run with a spatial latent (4 x 7 x 7) compresses
images, a `clip` run's text encoder turns captions into token states, and a U-Net with cross-attention on
those states denoises the VAE's latents. The glue is learnloop.models.latent_diffusion; the mechanics
learnloop.recipes.diffusion.latent; the evaluation learnloop.recipes.diffusion.guidance.

    learnloop run vae --set model.latent=spatial --set beta=0.1
    learnloop run clip
    learnloop run text-to-image --set vae_run=runs/vae/... --set clip_run=runs/clip/...
    learnloop generate RUN_DIR "a dark ankle boot" --n 16 --guidance 3 --seed 0

Stages: "vae" and "clip" (only when `vae_run` / `clip_run` is empty: those recipes' own stages, with the
settings `vae.*` / `clip.*`, so `learnloop run text-to-image` alone works), then "unet": a DiffusionTask on
z_0 = s mu_VAE(x), conditioned on the CLIP token states of a caption drawn per image per epoch exactly as
the CLIP run drew its captions, the caption replaced by the null caption [BOS] [EOS] with probability
`p_uncond`; the VAE and CLIP are frozen. EMA weights for sampling and val_loss (fixed t, eps and captions),
a per-epoch grid (one row per class), a CPU-time budget (`train.time_budget_min`).

Evaluation: agreement (the share the Fashion-MNIST evaluator assigns to the prompted class) and FID /
precision / recall vs the guidance scale w, from the best EMA weights. `generate` and `predict` (prompts
-> a grid of PREDICT_N images at the run's `guidance`, seed PREDICT_SEED) share one sampling path.

Cost on this CPU (1 thread, measured 2026-12-02): the default latent U-Net (1.1M parameters) trains on ~150
captioned images per CPU second (VAE and CLIP encoding, validation and grids included), so the budget of
`train.time_budget_min` = 20 CPU minutes is ~3000 steps of 64; DDIM-50 draws ~10 images per CPU second at
w = 1 and ~5.4 guided (2 U-Net calls per image and step), so the evaluation (1000 images for each of w = 1,
2, 3, 5) takes ~11 CPU minutes. Reached then: agreement 0.87 at w = 3 (0.68 at w = 1), FID 72 (floor 5).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from learnloop.data.captions import CLASS_NAMES, PROMPT_TEMPLATE, TEMPLATES, CaptionTokenizer, words
from learnloop.engine.optim import OptimConfig
from learnloop.engine.run import RunFolder
from learnloop.errors import UserError
from learnloop.evaluation.generative import FeatureConfig
from learnloop.models.autoencoder import VAE
from learnloop.models.diffusion import PREDICTIONS, SCHEDULES
from learnloop.recipes.autoencoder.common import model_kwargs
from learnloop.recipes.autoencoder.vae import VAEConfig, VAEParts
from learnloop.recipes.base import Bundle, ImageGenerator, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section, with_defaults
from learnloop.recipes.diffusion.common import DiffusionDataConfig, DiffusionTrainConfig, SamplerConfig, UNetConfig
from learnloop.recipes.diffusion.evaluation import training_summary as unet_summary
from learnloop.recipes.diffusion.guidance import evaluate_guidance
from learnloop.recipes.diffusion.latent import STAGE, build_task, build_unet, frozen_parts, latent_loaders, run_sampler
from learnloop.evaluation.generative import extractor_ready
from learnloop.recipes.gan.common import classifier
from learnloop.recipes.multimodal.clip import ClipConfig, ClipParts
from learnloop.recipes.runs import read_info, read_run_config
from learnloop.recipes.runtime import MAX_GUIDANCE
from learnloop.utils.images import save_image_grid

PREDICT_N, PREDICT_SEED = 16, 0            # what `predict` draws per prompt (`learnloop generate`'s defaults)
CAPTION_KEYS = ("vocab", "max_len", "captions", "classes", "shape")

LatentVAEConfig = with_defaults(VAEConfig, "LatentVAEConfig", model=dict(latent="spatial"), beta=0.1,
                                train=dict(epochs=5))


@dataclass
class LatentDataConfig(DiffusionDataConfig):
    scale_images: int = param(2000, "training images whose latents fit the latent scale s = 1 / std", min=2,
                              max=60_000)


@dataclass
class GuidanceEvalConfig(FeatureConfig):
    """Agreement and the generative metrics vs guidance (learnloop.recipes.diffusion.guidance)."""

    guidance_scales: tuple[float, ...] = param((1.0, 2.0, 3.0, 5.0), "guidance scales w evaluated (the default "
                                               "`guidance` is added)", min=0.0, max=MAX_GUIDANCE)
    per_class: int = param(100, "images per class and scale (FID etc. on all classes' images together)", min=1,
                           max=6000)
    template: str = param(PROMPT_TEMPLATE, "the prompt template, filled with each class's name (also the grids')",
                          choices=TEMPLATES)
    k: int = param(5, "k of the k-NN radii (precision/recall/density/coverage)", min=1, max=100)
    splits: int = param(10, "Inception Score splits", min=1, max=100)
    grid_columns: int = param(10, "images per class row in plots/samples_w<w>.png", min=1, max=100)


@dataclass
class TextToImageConfig:
    vae_run: str = param("", "a finished `vae` run with model.latent=spatial (empty: train one first as stage "
                         "'vae' with the vae.* settings)")
    clip_run: str = param("", "a finished `clip` run (empty: train one first as stage 'clip' with the clip.* "
                          "settings)")
    p_uncond: float = param(0.1, "caption dropout: probability that a training caption becomes the null caption "
                            "(Ho & Salimans: 0.1 or 0.2)", min=0.0, max=1.0)
    guidance: float = param(3.0, "default guidance scale w (1: the conditional model; grids, generate, predict, "
                            "the main metric)", min=0.0, max=MAX_GUIDANCE)
    schedule: str = param("linear", "beta schedule: linear (Ho et al.) or cosine (Nichol & Dhariwal)",
                          choices=SCHEDULES)
    timesteps: int = param(1000, "diffusion steps T", min=2, max=100_000)
    beta_start: float = param(1e-4, "linear schedule: beta_0", min=1e-8, max=0.5)
    beta_end: float = param(0.02, "linear schedule: beta_{T-1}", min=1e-8, max=0.999)
    cosine_s: float = param(0.008, "cosine schedule: offset s", min=1e-6, max=1.0)
    prediction: str = param("eps", "what the U-Net predicts: eps or v", choices=PREDICTIONS)
    min_snr_gamma: float = param(0.0, "Min-SNR-gamma loss weighting (Hang et al., 2023; 0: off)", min=0.0, max=1e4)
    ema_decay: float = param(0.999, "EMA of the U-Net's weights for sampling and val_loss (0: off)", min=0.0,
                             max=0.99999)
    grid_per_class: int = param(2, "per-epoch grid: images per class (one row each) at the default guidance",
                                min=1, max=32)
    unet: UNetConfig = section(UNetConfig, "the latent U-Net: one level at 7 x 7 (an odd side allows no "
                               "downsampling), self- and cross-attention in every block", base_channels=64,
                               channel_mult=(1,), num_res_blocks=2, attention_resolutions=(7,))
    sampler: SamplerConfig = section(SamplerConfig, "sampling of latents (clip_x0 off: latents are not in "
                                     "[-1, 1])", clip_x0=False)
    train: DiffusionTrainConfig = section(DiffusionTrainConfig, "training of the U-Net", time_budget_min=20.0,
                                          optim=OptimConfig(name="adam", lr=1e-3))
    data: LatentDataConfig = section(LatentDataConfig, "the U-Net's training images (Fashion-MNIST train)")
    eval: GuidanceEvalConfig = section(GuidanceEvalConfig, "evaluation vs guidance")
    vae: LatentVAEConfig = section(LatentVAEConfig, "the VAE trained first when vae_run is empty (else ignored)")
    clip: ClipConfig = section(ClipConfig, "the CLIP trained first when clip_run is empty (else ignored)")

    MOVED = {"T": "timesteps", "steps": "sampler.steps", "time_budget_min": "train.time_budget_min",
             "w": "guidance", "guidance_scale": "guidance"}


def check_config(cfg: TextToImageConfig) -> None:
    T, s = cfg.timesteps, cfg.sampler
    if cfg.schedule == "linear" and cfg.beta_start > cfg.beta_end:
        raise UserError(f"beta_start ({cfg.beta_start}) must not exceed beta_end ({cfg.beta_end})")
    if s.steps > T:
        raise UserError(f"sampler.steps: sampling steps must be <= timesteps T={T}, got {s.steps}")
    if s.steps_offset and s.spacing != "leading":
        raise UserError("sampler.steps_offset applies to spacing=leading only")
    if s.spacing == "leading" and (T // s.steps) * (s.steps - 1) + s.steps_offset > T - 1:
        raise UserError(f"sampler.steps_offset={s.steps_offset} puts a timestep above T-1={T - 1}")
    n = cfg.eval.per_class * len(CLASS_NAMES)
    if cfg.eval.k >= n or cfg.eval.splits > n:
        raise UserError(f"eval: need eval.k < {n} images (per_class x classes) and eval.splits <= {n}, got "
                        f"k={cfg.eval.k}, splits={cfg.eval.splits}")


def _upstream(path: str) -> tuple[object, dict]:
    """(resolved config, data.json) of a run folder the runtime has already loaded as an upstream run."""
    folder = RunFolder.open(path)
    return read_run_config(folder)[1], read_info(folder)


def _latent_shape(vae_cfg, shape, where: str) -> tuple[int, ...]:
    if vae_cfg.model.latent != "spatial":
        raise UserError(f"{where} has a vector latent ({vae_cfg.model.latent_dim} numbers); text-to-image needs a "
                        "spatial one (`learnloop run vae --set model.latent=spatial --set beta=0.1`)")
    with torch.random.fork_rng(devices=[]):              # a check; training's random stream stays as it was
        return tuple(VAE(tuple(shape), **model_kwargs(vae_cfg.model)).latent_shape)


class TextToImageParts(Parts):
    needs = {"vae_run": ("vae",), "clip_run": ("clip",)}

    def data(self, cfg: TextToImageConfig, seed: int) -> Bundle:
        check_config(cfg)
        if extractor_ready(cfg.eval):         # an unknown extractor, a missing weights file, no classifier: now
            with torch.random.fork_rng(devices=[]):      # building it must not shift training's random stream
                classifier(cfg.eval, [names[0] for names in CLASS_NAMES])
        extra, info = {}, {"seed": seed}
        if cfg.vae_run:
            vae_cfg, vae_info = _upstream(cfg.vae_run)
        else:
            vae_cfg, extra["vae"] = cfg.vae, VAEParts().data(cfg.vae, seed)
            info["vae"] = vae_info = extra["vae"].info
        latent_shape = _latent_shape(vae_cfg, vae_info["shape"], f"vae_run: {cfg.vae_run}" if cfg.vae_run else
                                     "vae.model.latent=vector: the VAE")
        if cfg.clip_run:
            clip_cfg, clip_info = _upstream(cfg.clip_run)
        else:
            clip_cfg, extra["clip"] = cfg.clip, ClipParts().data(cfg.clip, seed)
            info["clip"] = clip_info = extra["clip"].info
        if list(clip_info["shape"]) != list(vae_info["shape"]):
            raise UserError(f"the VAE's images are {vae_info['shape']}, CLIP's {clip_info['shape']}")
        with torch.random.fork_rng(devices=[]):          # the U-Net settings fail now, not after the VAE trained
            build_unet(cfg, latent_shape, clip_cfg.model.text_width)
        info.update({k: clip_info[k] for k in CAPTION_KEYS}, latent_shape=list(latent_shape),
                    dataset=cfg.data.dataset)
        train, val = latent_loaders(cfg, info, seed)
        return Bundle(train=train, val=val, info=info, extra=extra)

    def stages(self, cfg: TextToImageConfig, info: dict, upstream: dict) -> list[Stage]:
        out = []
        if not cfg.vae_run:
            vae = VAEParts().stages(cfg.vae, info["vae"], {})[0]
            out.append(dataclasses.replace(vae, name="vae", loaders=lambda b: (b.extra["vae"].train,
                                                                              b.extra["vae"].val)))
        if not cfg.clip_run:
            clip = ClipParts().stages(cfg.clip, info["clip"], {})[0]
            out.append(dataclasses.replace(clip, name="clip", loaders=lambda b: (b.extra["clip"].train,
                                                                                b.extra["clip"].val)))
        out.append(Stage(STAGE, lambda trained: build_task(cfg, info, *frozen_parts(cfg, upstream, trained)),
                         cfg.train, monitor="val_loss" if cfg.data.val_samples else None, mode="min",
                         callbacks=lambda task: task.callbacks))
        return out

    def evaluate(self, cfg: TextToImageConfig, run, data: Bundle) -> dict:
        metrics = training_summary(run)
        sampler = run_sampler(run, run.which)
        if not extractor_ready(cfg.eval):
            run.say("evaluator weights missing: skipping agreement and FID (run bench/train_evaluator.py, then "
                    "`learnloop eval RUN_DIR`)")
            return metrics
        with torch.no_grad():
            metrics.update(evaluate_guidance(cfg, run, sampler, run.seed))
        return metrics

    def generator(self, run) -> ImageGenerator:
        return PromptGenerator(run)

    def predictor(self, run) -> Predictor:
        return PromptPredictor(run)


def training_summary(run) -> dict:
    """The U-Net stage's summary (learnloop.recipes.diffusion.evaluation.training_summary) and the other
    stages' monitored values when they were trained here."""
    out = unet_summary(run, STAGE, "text-to-image U-Net")
    for stage, key, best in (("vae", "val_loss", min), ("clip", "val_zero_shot_accuracy", max)):
        values = [r[key] for r in run.history(stage) if isinstance(r.get(key), (int, float))] if stage in run.tasks \
            else []
        if values:
            out[f"{stage}_best_{key}"] = float(best(values))
    return out


# --- generate and predict: one sampling path -----------------------------------------------------------------
class PromptGenerator(ImageGenerator):
    prompt = "a caption in the captions' words, e.g. 'a photo of a sneaker' or 'a dark ankle boot'"

    def __init__(self, run):
        self.run, self.cfg = run, run.cfg
        self.guidance = float(run.cfg.guidance)
        self.sampler = run_sampler(run, run.which)

    def output_path(self, prompt: str, n: int, seed: int, guidance: float):
        slug = "-".join(words(prompt))[:60] or "prompt"
        return self.run.samples / f"generate_{slug}_n{n}_w{guidance:g}_seed{seed}.png"

    def generate(self, prompt: str, n: int, seed: int, guidance: float | None, out=None) -> dict:
        w = self.guidance if guidance is None else guidance
        images = self.sampler.images([prompt] * n, w, seed)          # unknown words: the tokenizer's UserError
        path = self.output_path(prompt, n, seed, w) if out is None else out
        try:
            save_image_grid(images, path, nrow=math.ceil(math.sqrt(n)), value_range=(0.0, 1.0))
        except OSError as e:
            raise UserError(f"{path}: cannot write the image ({e.strerror or e})") from None
        s = self.cfg.sampler
        return {"image": str(path), "prompt": prompt, "n": n, "seed": seed, "guidance": w, "sampler": s.kind,
                "steps": s.steps}


class PromptPredictor(Predictor):
    inputs = (f"prompts in the captions' words (e.g. 'a photo of a sneaker', 'a dark ankle boot'): a grid of "
              f"{PREDICT_N} images each at the run's guidance, seed {PREDICT_SEED}, in the run's samples/ folder")

    def __init__(self, run):
        self.generator = PromptGenerator(run)

    def examples(self, folder) -> list[str]:
        return ["a photo of a sneaker", "a dark ankle boot"]

    def __call__(self, raw: list[str]) -> list[dict]:
        tok: CaptionTokenizer = self.generator.sampler.conditioner.tokenizer
        tok.tokenize(list(raw))                  # every unknown word of every prompt in one line, up front
        return [{"input": p, **self.generator.generate(p, PREDICT_N, PREDICT_SEED, None)} for p in raw]


SMOKE = {"timesteps": 10, "unet.base_channels": 8, "unet.num_res_blocks": 1, "unet.attention_heads": 1,
         "unet.norm_groups": 2, "sampler.steps": 3, "grid_per_class": 1, "eval.per_class": 2,
         "eval.guidance_scales": "1,3", "eval.grid_columns": 2, "train.epochs": 1, "train.steps_per_epoch": 3,
         "train.batch_size": 8, "data.subset": 200, "data.val_samples": 16, "data.scale_images": 64,
         "vae.train.epochs": 1, "vae.train.batch_size": 32, "vae.data.subset": 256, "vae.data.test_subset": 200,
         "vae.data.val_fraction": 0.005, "vae.model.width": 4,
         "clip.train.epochs": 1, "clip.train.batch_size": 32, "clip.data.subset": 256, "clip.data.val_fraction": 0.02,
         "clip.model.image_width": 4, "clip.model.image_features": 16, "clip.model.embed_dim": 8,
         "clip.model.text_width": 16, "clip.model.text_layers": 1, "clip.model.text_heads": 2}

recipe("text-to-image", "latent diffusion in miniature: a VAE's 4x7x7 latents, a U-Net with cross-attention on "
       "CLIP token states, classifier-free guidance", TextToImageConfig,
       target="the evaluator recognises the prompted class in >= 0.8 of images at the default guidance",
       main_metric="agreement", smoke=SMOKE,
       benchmark="OMP_NUM_THREADS=1 learnloop run text-to-image --set vae_run=<vae run, model.latent=spatial> "
                 "--set clip_run=<clip run>")(TextToImageParts)
