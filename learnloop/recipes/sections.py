"""The config sections every recipe nests: `train` (with `optim` and `schedule`) and `data`.

One definition each, so "the learning rate" has one address in every recipe (`train.optim.lr`), tuning
(issue J) can search it, and `learnloop show RECIPE` lists it the same way everywhere. A recipe with
several trained parts gives each its own section (`generator.optim.lr`, `scratch.train.epochs`).
"""

from __future__ import annotations

from dataclasses import dataclass

from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.utils.params import param, section


@dataclass
class TrainConfig:
    """How one part is trained: the Learner's settings."""

    epochs: int = param(10, "training epochs", min=1, max=100_000)
    batch_size: int = param(128, "batch size", min=1, max=1_000_000)
    optim: OptimConfig = section(OptimConfig, "optimizer")
    schedule: ScheduleConfig = section(ScheduleConfig, "learning-rate schedule")
    accumulate: int = param(1, "micro-batches per optimizer step (gradient accumulation)", min=1, max=4096)
    clip_grad_norm: float = param(0.0, "clip the global gradient norm to this (0: off)", min=0.0)
    precision: str = param("32", "32 or bf16 autocast (16 needs CUDA)", choices=("32", "bf16", "16"))
    patience: int = param(0, "early stopping: epochs without improvement of the monitored metric (0: off)",
                          min=0)


@dataclass
class DataConfig:
    """Which data, from where, how much, and how it is split."""

    dataset: str = param("", "dataset name")
    path: str = param("", "folder with the dataset's files (default: the standard search order)")
    subset: int = param(0, "use only this many training examples (0: all)", min=0)
    val_fraction: float = param(0.1, "fraction of the training data held out for validation", min=0.0, max=0.5)
    test_fraction: float = param(0.2, "test fraction for datasets without a test split", min=0.05, max=0.5)


def learner_settings(train: TrainConfig) -> dict:
    """The Learner keyword arguments a `train` section sets."""
    return dict(epochs=train.epochs, schedule=train.schedule, accumulate=train.accumulate,
                clip_grad_norm=train.clip_grad_norm or None, precision=train.precision)
