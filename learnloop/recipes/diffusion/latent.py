"""What the `text-to-image` recipe (text_to_image.py) is built from besides its config and parts: the captioned
training batches, the frozen VAE and CLIP text encoder turned into the DiffusionTask's `inputs`, the U-Net task
with its EMA and sample grid, and the one sampling path (prompts -> guided latents -> images) that the
evaluation, the per-epoch grid, `learnloop generate` and `predict` all use.

The technique lives below: learnloop.models.latent_diffusion (LatentDenoiser with the latent scale s,
drop_captions, GuidedDenoiser; Rombach et al., 2022 and Ho & Salimans, 2022), learnloop.models.unet (the
cross-attention U-Net), learnloop.models.diffusion (schedules, DDPM / DDIM), learnloop.tasks.diffusion.

    z_0 = s * mu_VAE(x)          the VAE's posterior mean, s = 1 / std over `data.scale_images` training latents
    c   = CLIP token states      of the image's caption (sampled per epoch as CLIP's training captions), or of
                                 the null caption [BOS] [EOS] with probability `p_uncond` (training only)
    x   = D_VAE(z_0 / s)         after DDIM / DDPM on z with eps~ = eps(z, null) + w (eps(z, c) - eps(z, null))

`cfg` below is a TextToImageConfig (text_to_image.py); `info` its data.json (caption vocabulary and
attributes of the CLIP run, the split seed).
"""

from __future__ import annotations

import math

import torch

from learnloop.data.captions import CaptionLoader, CaptionSampler, CaptionTokenizer, class_prompts
from learnloop.data.loader import TensorLoader, image_transform
from learnloop.engine.callbacks import SampleGrid
from learnloop.engine.ema import EMA
from learnloop.errors import UserError
from learnloop.models.diffusion import sample
from learnloop.models.latent_diffusion import GuidedDenoiser, LatentDenoiser, drop_captions
from learnloop.models.unet import UNet
from learnloop.recipes.diffusion.common import EMA_NAME, GRID_SEED, build_diffusion, sampling_model, split_images
from learnloop.recipes.runtime import MAX_GUIDANCE
from learnloop.tasks.diffusion import DiffusionTask, fixed_validation

STAGE = "unet"
SCALE_SEED_OFFSET = 3


# --- data ---------------------------------------------------------------------------------------------------
class CaptionBatches(CaptionLoader):
    """`steps` batches per epoch of (images in [0, 1], ids, pad_mask, labels), drawn without replacement from
    in-memory uint8 images and reshuffled when they run out (as learnloop.data.loader.RandomBatches), so the
    CPU budget is checked every `steps` batches; each image's caption is drawn once per epoch from the epoch's
    generator (CaptionLoader.captions), as CLIP's training captions are."""

    def __init__(self, images: torch.Tensor, sampler: CaptionSampler, tokenizer: CaptionTokenizer, batch_size: int,
                 steps: int, seed: int = 0):
        if len(images) < batch_size:
            raise UserError(f"need at least train.batch_size={batch_size} training images, got {len(images)}")
        super().__init__(images, sampler, tokenizer, batch_size, shuffle=True, seed=seed, transform=image_transform())
        self.steps = steps

    def size(self) -> int:
        return math.ceil(self.steps / self.world_size) * self.world_size * self.batch_size

    def permutation(self, g: torch.Generator) -> torch.Tensor:
        need = self.size()
        return torch.cat([torch.randperm(self.n, generator=g) for _ in range(math.ceil(need / self.n))])[:need]


def latent_loaders(cfg, info: dict, seed: int) -> tuple:
    """(training CaptionBatches, validation TensorLoader of (t, eps, images, ids, pad_mask, labels) with
    fixed t, latent-shaped eps and one fixed caption per image), over the images of `split_images`."""
    val, train = split_images(cfg, seed)
    tok = CaptionTokenizer.from_info(info)
    loader = CaptionBatches(train.images, CaptionSampler.from_info(info, train.images, train.labels), tok,
                            cfg.train.batch_size, cfg.train.steps_per_epoch, seed)
    if not len(val):
        return loader, None
    texts = CaptionSampler.from_info(info, val.images, val.labels).sample(torch.arange(len(val)),
                                                                       torch.Generator().manual_seed(seed + 2))
    ids, pad = tok.encode(texts)
    t, noise = fixed_validation(torch.zeros(len(val), *info["latent_shape"]), cfg.timesteps, seed + 1)
    x = val.images.float().div_(255.0)
    return loader, TensorLoader([t, noise, x, ids, pad, val.labels], batch_size=max(cfg.train.batch_size, 250))


def scale_images(cfg, info: dict) -> torch.Tensor:
    """The `data.scale_images` training images (a subset seeded by the run's seed) whose latents fit s."""
    _, train = split_images(cfg, info["seed"])
    n = min(cfg.data.scale_images, len(train))
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(info["seed"] + SCALE_SEED_OFFSET))[:n]
    return train.images[keep.sort().values].float().div_(255.0)


# --- the frozen parts as the task's inputs -----------------------------------------------------------------
class TextConditioner:
    """The DiffusionTask's `inputs`: (images in [0, 1], ids, pad_mask, labels) -> (z_0 = s mu(x), {"context":
    CLIP token states, "context_mask": pad_mask}), VAE and CLIP frozen (eval mode, no gradients). While the
    denoiser trains, each caption becomes the null caption with probability `p_uncond` (global RNG, which the
    Learner checkpoints); validation batches keep theirs."""

    def __init__(self, denoiser: LatentDenoiser, vae, clip, tokenizer: CaptionTokenizer, p_uncond: float = 0.0):
        for m in (vae, clip):
            m.eval()
            m.requires_grad_(False)
        self.denoiser, self.vae, self.clip, self.tokenizer, self.p_uncond = denoiser, vae, clip, tokenizer, p_uncond
        self.null_context, self.null_mask = self.text_states(*tokenizer.encode_empty(1))

    def _to(self, device) -> None:
        if self.null_context.device != device:
            self.vae.to(device)
            self.clip.to(device)
            self.null_context, self.null_mask = self.null_context.to(device), self.null_mask.to(device)

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled latents mu(x) of images in [0, 1]."""
        self._to(x.device)
        return self.vae.encode(x)[0]

    @torch.no_grad()
    def text_states(self, ids: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states (B, T, W), pad_mask (B, T)) of encoded texts, on the text encoder's device."""
        device = next(self.clip.parameters()).device
        ids, pad = ids.to(device), pad.to(device)
        return self.clip.encode_text(ids, pad)[1], pad

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] of scaled latents z (D(z / s))."""
        return self.vae.decode(z / self.denoiser.latent_scale.to(z.device))

    def __call__(self, batch) -> tuple[torch.Tensor, dict]:
        x, ids, pad = batch[0], batch[1], batch[2]
        z0 = self.denoiser.latent_scale * self.latents(x)
        context, mask = self.text_states(ids, pad)
        if self.denoiser.training and self.p_uncond > 0:
            context, mask = drop_captions(context, mask, self.null_context, self.null_mask, self.p_uncond)
        return z0, {"context": context, "context_mask": mask}


def check_guidance(w) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 <= w <= MAX_GUIDANCE:
        raise UserError(f"the guidance scale must be a number between 0 and {MAX_GUIDANCE}, got {w}")
    return float(w)


class PromptSampler:
    """prompts -> latents -> images with `denoiser` (the EMA weights when sampling a run), the `sampler`
    settings and classifier-free guidance scale w; every random number from one generator seeded with `seed`,
    in batches of sampler.batch_size. Unknown words are the tokenizer's one-line UserError."""

    def __init__(self, denoiser: LatentDenoiser, conditioner: TextConditioner, cfg):
        self.denoiser, self.conditioner, self.cfg = denoiser, conditioner, cfg
        self.diffusion = build_diffusion(cfg)

    def contexts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token states (N, L, W), pad_mask (N, L)) of the prompts (each distinct prompt encoded once)."""
        unique = list(dict.fromkeys(prompts))
        states, pad = self.conditioner.text_states(*self.conditioner.tokenizer.encode(unique))
        index = torch.tensor([unique.index(p) for p in prompts])
        return states[index], pad[index]

    def model(self, context: torch.Tensor, mask: torch.Tensor, guidance: float) -> GuidedDenoiser:
        c = self.conditioner
        return GuidedDenoiser(self.denoiser, context, mask, c.null_context, c.null_mask, check_guidance(guidance))

    @torch.no_grad()
    def latents(self, prompts: list[str], guidance: float, seed: int) -> torch.Tensor:
        s, cfg = self.cfg.sampler, self.cfg
        check_guidance(guidance)
        context, mask = self.contexts(list(prompts))
        g = torch.Generator().manual_seed(seed)
        was = self.denoiser.training
        self.denoiser.eval()
        device = self.denoiser.latent_scale.device
        shape = tuple(self.denoiser.latent_shape)
        out = []
        try:
            for i in range(0, len(prompts), s.batch_size):
                j = min(i + s.batch_size, len(prompts))
                model = self.model(context[i:j].to(device), mask[i:j].to(device), guidance)
                out.append(sample(model, self.diffusion, (j - i, *shape), sampler=s.kind, steps=s.steps,
                                  eta=s.eta if s.kind == "ddim" else 0.0, spacing=s.spacing,
                                  steps_offset=s.steps_offset if s.spacing == "leading" else 0, variance=s.variance,
                                  prediction=cfg.prediction, clip=s.clip_x0, generator=g, device=device).cpu())
        finally:
            self.denoiser.train(was)
        return torch.cat(out)

    @torch.no_grad()
    def images(self, prompts: list[str], guidance: float, seed: int) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] for N prompts."""
        z = self.latents(prompts, guidance, seed)
        step = self.cfg.sampler.batch_size
        return torch.cat([self.conditioner.decode(z[i:i + step]).cpu() for i in range(0, len(z), step)])


def grid_prompts(info: dict, template: str, per_class: int) -> list[str]:
    """`per_class` copies of each class's prompt, class-major: a grid with `per_class` columns has one row per
    class."""
    return [p for p in class_prompts((template,), len(info["classes"])) for _ in range(per_class)]


# --- the task -------------------------------------------------------------------------------------------------
def build_unet(cfg, latent_shape, context_dim: int) -> UNet:
    c, h, w = latent_shape
    u = cfg.unet
    return UNet((h, w), c, base_channels=u.base_channels, channel_mult=u.channel_mult, num_res_blocks=u.num_res_blocks,
                attention_resolutions=u.attention_resolutions, attention_heads=u.attention_heads, dropout=u.dropout,
                norm_groups=u.norm_groups, context_dim=context_dim)


def build_task(cfg, info: dict, vae, clip) -> DiffusionTask:
    """The latent U-Net (its scale fitted on training latents), its process and optimizer, the EMA callback
    (validating with the EMA weights) and the per-epoch grid (one row per class at the default guidance)."""
    shape = tuple(vae.latent_shape)
    denoiser = LatentDenoiser(build_unet(cfg, shape, clip.text_width), shape)
    cond = TextConditioner(denoiser, vae, clip, CaptionTokenizer.from_info(info), cfg.p_uncond)
    denoiser.fit_scale(cond.latents(scale_images(cfg, info)))
    ema = EMA("model", decay=cfg.ema_decay, warmup=True, validate_with_ema=True, name=EMA_NAME) \
        if cfg.ema_decay > 0 else None
    prompts = grid_prompts(info, cfg.eval.template, cfg.grid_per_class)

    def grid(learner) -> torch.Tensor:
        net = ema.module if ema is not None else denoiser
        return PromptSampler(net, cond, cfg).images(prompts, cfg.guidance, GRID_SEED)

    callbacks = ([ema] if ema is not None else []) + [SampleGrid(grid, nrow=cfg.grid_per_class, value_range=(0.0, 1.0))]
    return DiffusionTask(denoiser, build_diffusion(cfg), cfg.train.optim, prediction=cfg.prediction,
                         min_snr_gamma=cfg.min_snr_gamma, inputs=cond, callbacks=callbacks,
                         time_budget_s=60 * cfg.train.time_budget_min)


def frozen_parts(cfg, upstream: dict, trained: dict) -> tuple:
    """(VAE, CLIP) of the upstream runs, or of the stages "vae" / "clip" trained in this run."""
    vae = upstream["vae_run"].model if cfg.vae_run else trained["vae"].model
    clip = upstream["clip_run"].model if cfg.clip_run else trained["clip"].model
    return vae, clip


def sampling_denoiser(run, which: str = "best") -> tuple[LatentDenoiser, dict]:
    """(the denoiser with the `which` checkpoint's EMA weights, or its own when the run kept none, in eval
    mode; the checkpoint state): `common.sampling_model` of the U-Net stage."""
    return sampling_model(run, which, STAGE)


def run_sampler(run, which: str = "best") -> PromptSampler:
    """The PromptSampler of a loaded text-to-image run (EMA weights of `which`, its VAE and CLIP)."""
    denoiser, _ = sampling_denoiser(run, which)
    vae, clip = frozen_parts(run.cfg, run.upstream, run.tasks)
    return PromptSampler(denoiser, TextConditioner(denoiser, vae, clip, CaptionTokenizer.from_info(run.info)), run.cfg)
