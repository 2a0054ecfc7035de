"""Recipes: named, declarative experiments (data + model + task + hyper-parameters + evaluation).

A recipe is registered with `@recipe(...)` on a function `fn(cfg, ctx) -> dict of final metrics`; its
typed config dataclass holds the defaults that reach the stated target, measured by `benchmark`.
`RunContext` gives the function its run folder and builds Learners wired to it (progress bar,
checkpoints, resume, tracking), so recipes stay declarative.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

from learnloop.engine.callbacks import EarlyStopping, ProgressBar, TensorBoardLogger
from learnloop.engine.learner import Learner
from learnloop.engine.run import RunFolder
from learnloop.engine.schedules import ScheduleConfig


@dataclass
class Recipe:
    name: str
    summary: str
    config: type
    fn: Callable
    family: str = "classic"
    target: str = ""                 # e.g. "test_accuracy >= 0.92"
    benchmark: str = ""              # the command that measures the target
    evaluate: Callable | None = None  # (cfg, ctx) -> metrics, for `learnloop eval`
    build: Callable | None = None     # (cfg) -> Learner without a run, for `learnloop lr-find`
    main_metric: str = ""


_RECIPES: dict[str, Recipe] = {}


def recipe(name: str, summary: str, config: type, family: str = "classic", target: str = "",
           benchmark: str = "", main_metric: str = ""):
    def register(fn):
        _RECIPES[name] = Recipe(name, summary, config, fn, family, target,
                                benchmark or f"learnloop run {name}", main_metric=main_metric)
        return fn

    return register


def attach(name: str, *, evaluate: Callable | None = None, build: Callable | None = None) -> None:
    """Give a registered recipe its `eval` and `lr-find` entry points."""
    r = _RECIPES[name]
    if evaluate is not None:
        r.evaluate = evaluate
    if build is not None:
        r.build = build


def registered() -> dict[str, Recipe]:
    return _RECIPES


@dataclass
class RunContext:
    run: RunFolder
    seed: int = 0
    resume: bool = False
    progress: bool | None = None
    track: str | None = None
    device: str = "cpu"
    outputs: dict = field(default_factory=dict)    # objects handed back to the Python API (model, task...)
    quiet: bool = False

    def say(self, message: str) -> None:
        """A progress message for the person at the terminal, also kept in log.txt."""
        self.run.log(message)
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def learner(self, task, train, val=None, *, epochs: int, name: str = "", schedule: ScheduleConfig | None = None,
                accumulate: int = 1, clip_grad_norm: float | None = None, precision: str = "32",
                monitor: str | None = "val_loss", mode: str = "min", patience: int = 0, callbacks=(),
                log_every: int = 0) -> Learner:
        cbs = [ProgressBar(self.progress), *callbacks]
        if patience > 0 and monitor:
            cbs.append(EarlyStopping(monitor, patience, mode))
        if self.track == "tensorboard":
            cbs.append(TensorBoardLogger(self.run.path / "tensorboard" / name))
        return Learner(task, train, val, epochs=epochs, run=self.run, name=name, callbacks=cbs,
                       schedule=schedule, accumulate=accumulate, clip_grad_norm=clip_grad_norm or None,
                       precision=precision, device=self.device, monitor=monitor, mode=mode, log_every=log_every)

    def fit(self, learner: Learner) -> list[dict]:
        if self.resume and learner.try_resume():
            self.say(f"resuming{' ' + learner.name if learner.name else ''} from epoch {learner.epoch}")
        return learner.fit()
