"""`ddpm`: denoising diffusion on Fashion-MNIST in [-1, 1] (Ho, Jain & Abbeel, 2020), sampled with DDPM or
DDIM (Song, Meng & Ermon, 2021); linear or cosine betas (Nichol & Dhariwal, 2021), eps or v prediction
(Salimans & Ho, 2022), leading / trailing / linspace timestep spacing (Lin et al., 2024).

One stage (checkpoints/): the U-Net trained by a DiffusionTask, EMA weights for sampling and val_loss, a
sample grid per epoch, a CPU-time budget. Evaluation (learnloop.recipes.diffusion.evaluation) samples the EMA
weights of `best` (lowest val_loss of the EMA weights) with the `sampler` settings and draws the steps curve.
The predictor turns seeds into PNGs, optionally with another sampler: 42, 7x16, 3x4@ddim20, 5@ddpm.

Cost on this CPU (1 thread; the default U-Net makes ~170 image-calls per CPU second when sampling and trains
on ~58 images per CPU second): training stops at `train.time_budget_min` = 120 CPU minutes (~6.5k steps of
64 images); the evaluation samples 1000 images with DDIM-50 (50k U-Net calls, ~5 CPU minutes) and the steps
curve 80 images per point for DDPM 100 / 1000 and DDIM 10 / 20 / 50 / 100 (102k calls, ~10 CPU minutes), so
`learnloop eval` takes ~15 CPU minutes. FID depends on N: compare runs at equal `eval.samples` (and run
`python bench/bench_diffusion.py curve RUN --samples 1000` for the DDIM-50 vs DDPM-1000 comparison).
"""

from __future__ import annotations

import math
import re

import torch

from learnloop.evaluation.generative import extractor_ready

from learnloop.errors import UserError
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.diffusion.common import (
    DiffusionConfig, build_diffusion, check_config, diffusion_bundle, diffusion_stage, sample_uint8, sampling_model,
)
from learnloop.recipes.diffusion.evaluation import evaluate_samples, steps_curve, training_summary
from learnloop.utils.images import save_image_grid

SAMPLE = re.compile(r"^(\d{1,19})(?:x(\d{1,4}))?(?:@(ddpm|ddim)(\d{1,6})?)?$")
MAX_GRID = 256
SMOKE = {"timesteps": 10, "unet.base_channels": 4, "unet.channel_mult": "1,1,1", "unet.attention_resolutions": "",
         "unet.attention_heads": 1, "unet.norm_groups": 2, "sampler.steps": 3, "sampler.batch_size": 64,
         "grid_samples": 4, "curve.ddpm_steps": "10", "curve.ddim_steps": "2", "curve.samples": 20,
         "eval.samples": 20, "train.epochs": 1, "train.steps_per_epoch": 3, "train.batch_size": 8,
         "data.subset": 200, "data.val_samples": 16}


class SamplePredictor(Predictor):
    inputs = ("seeds: SEED (one sample as a PNG) or SEEDxN (a grid of N <= 256), optionally @ddpm or @ddim with a "
              "step count (e.g. 42, 7x16, 3x4@ddim20, 5@ddpm = all T steps); default: the run's `sampler` "
              "settings; PNGs go to the run's samples/ folder")

    def __init__(self, run):
        self.run, self.cfg = run, run.cfg
        self.model, _ = sampling_model(run, run.which)
        self.diffusion = build_diffusion(self.cfg)

    def examples(self, folder) -> list[str]:
        return ["42", f"7x4@ddim{min(10, self.cfg.timesteps)}"]

    def _parse(self, raw: str) -> tuple[int, int, str | None, int | None]:
        m = SAMPLE.match(raw.strip()) if isinstance(raw, str) else None
        if m is None:
            raise UserError(f"{raw!r}: expected SEED or SEEDxN, optionally @ddpm or @ddim with steps, e.g. 42, "
                            "7x16, 3x4@ddim20")
        seed, n = int(m.group(1)), int(m.group(2) or 1)
        if seed >= 2 ** 63:
            raise UserError(f"{raw!r}: the seed must be below 2**63")
        if not 1 <= n <= MAX_GRID:
            raise UserError(f"{raw!r}: N must be between 1 and {MAX_GRID}")
        kind = m.group(3)
        steps = int(m.group(4)) if m.group(4) else (self.cfg.timesteps if kind == "ddpm" else None)
        if steps is not None and not 1 <= steps <= self.cfg.timesteps:
            raise UserError(f"{raw!r}: steps must be between 1 and T={self.cfg.timesteps}")
        return seed, n, kind, steps

    def __call__(self, raw: list[str]) -> list[dict]:
        from PIL import Image

        out = []
        for text in raw:
            seed, n, kind, steps = self._parse(text)
            images = sample_uint8(self.model, self.diffusion, self.cfg, n, seed, kind=kind, steps=steps)
            used_kind, used_steps = kind or self.cfg.sampler.kind, steps or self.cfg.sampler.steps
            tag = f"seed{seed}" + (f"x{n}" if n > 1 else "") + f"_{used_kind}{used_steps}"
            path = self.run.samples / f"predict_{tag}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if n == 1:
                Image.fromarray(images[0, 0].numpy()).save(path)
            else:
                save_image_grid(images, path, nrow=math.ceil(math.sqrt(n)))
            out.append({"input": text, "path": str(path), "seed": seed, "samples": n, "sampler": used_kind,
                        "steps": used_steps})
        return out


class DdpmParts(Parts):
    def data(self, cfg: DiffusionConfig, seed: int) -> Bundle:
        check_config(cfg)
        extractor_ready(cfg.eval)                 # an unknown extractor or a missing weights file fails now
        return diffusion_bundle(cfg, seed)

    def stages(self, cfg: DiffusionConfig, info: dict, upstream: dict) -> list[Stage]:
        return [diffusion_stage(cfg, info)]

    def evaluate(self, cfg: DiffusionConfig, run, data: Bundle) -> dict:
        metrics = training_summary(run)
        if not extractor_ready(cfg.eval):
            run.say("evaluator weights missing: skipping FID/precision/recall (run bench/train_evaluator.py, "
                    "then `learnloop eval RUN_DIR`)")
            return metrics
        model, state = sampling_model(run, run.which)
        diffusion = build_diffusion(cfg)
        metrics["sampled_epoch"] = state["epoch"]
        with torch.no_grad():
            metrics.update(evaluate_samples(model, diffusion, cfg, run, run.seed))
            metrics.update(steps_curve(model, diffusion, cfg, run, run.seed))
        return metrics

    def predictor(self, run) -> Predictor:
        return SamplePredictor(run)


recipe("ddpm", "DDPM (Ho et al., 2020) on Fashion-MNIST: eps/v U-Net, linear/cosine betas, DDPM and DDIM sampling",
       DiffusionConfig, target="FID below vae's and dcgan's (same extractor and N); DDIM-50 FID within 20% of "
       "DDPM's with all T steps", main_metric="fid", benchmark="python bench/bench_diffusion.py", smoke=SMOKE
       )(DdpmParts)
