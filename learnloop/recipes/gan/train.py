"""The six GANs on Fashion-MNIST: one `GanParts` with one configuration (learnloop.recipes.gan.common.GanConfig)
and different defaults, trained as the players "generator" and "discriminator" of one AdversarialTask:

    gan-mlp     MLP G and D, non-saturating BCE loss (Goodfellow et al., 2014)
    dcgan       DCGAN G and D (Radford et al., 2016), non-saturating BCE loss
    wgan-clip   Wasserstein loss + weight clipping, RMSprop, n_critic = 5 (Arjovsky et al., 2017)
    wgan-gp     Wasserstein loss + gradient penalty, critic without BatchNorm (Gulrajani et al., 2017)
    sngan       hinge loss + spectral norm on every D layer (Miyato et al., 2018)
    cgan        DCGAN with the one-hot class concatenated to z and to D's input (Mirza & Osindero, 2014)

so `learnloop run dcgan --set loss=hinge --set spectral_norm=true` is a valid experiment. The predictor
turns seeds (and a cGAN's classes) into samples.
"""

from __future__ import annotations

import math
import re

import torch

from learnloop.errors import UserError
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import with_defaults
from learnloop.recipes.gan.common import (
    SMOKE, GanConfig, evaluate_checkpoints, extractor_ready, gan_bundle, gan_stage, num_classes, sample_images,
    sampling_generator, summarise_training,
)
from learnloop.utils.images import save_image_grid

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
            images = sample_images(self.generator, n, self.cfg.z_dim, self.k, labels=labels, seed=seed)
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
