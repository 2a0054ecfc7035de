"""What the studies of a trained generator share: `StudyConfig` (the GAN settings plus `generator_run` and
`checkpoint`), `StudyParts` (consume a GAN run of any of the six, or train one first as stage "gan", then
`study()` its sampling generator), the real test images and the pixel attributes a class cannot show."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from learnloop.data.vision import ImageData, load_fashion_mnist
from learnloop.recipes.base import Bundle, Parts, Stage
from learnloop.recipes.config import param
from learnloop.recipes.gan.common import (
    GANS, SMOKE, STAGE, GanConfig, gan_bundle, gan_stage, require_evaluator, sampling_generator, summarise_training,
)

STUDY_SMOKE = {**SMOKE, "study_samples": 200}


@dataclass
class StudyConfig(GanConfig):
    """A study's settings; the GAN settings above train its generator when `generator_run` is empty."""

    generator_run: str = param("", "a finished GAN run folder to study (empty: train one first with these "
                                    "settings)")
    checkpoint: str = param("best", "which checkpoint of the generator", choices=("best", "last"))


class StudyParts(Parts, ABC):
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

    @abstractmethod
    def study(self, cfg, run, data: Bundle, g: torch.nn.Module, gan_run) -> dict:
        """The study's own metrics and plots, given the generator `g` (from `gan_run`, an upstream or this run)."""


def real_test_images(cfg: StudyConfig) -> ImageData:
    return load_fashion_mnist("test", cfg.data.path or None)


def pixel_attributes(images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image attributes a classifier cannot see in its class: brightness (mean intensity in [0, 1]) and
    ink area (fraction of pixels above half intensity)."""
    x = images_uint8.float().flatten(1) / 255
    return {"brightness": x.mean(1), "ink_area": (x > 0.5).float().mean(1)}
