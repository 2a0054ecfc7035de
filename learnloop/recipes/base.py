"""A recipe is a named set of parts that the runtime (runtime.py) drives; see docs/architecture.md.

    data(cfg, seed)              -> Bundle: loaders + `info`, what a model must know (shapes, classes, vocab)
    build(cfg, info)             -> Task (named modules), from `info` alone, so a run folder can be rebuilt
    stages(cfg, info, upstream)  -> [Stage]: what is trained, in order (default: one stage from `build`)
    evaluate(cfg, run, data)     -> final metrics + report files (plots, tables, samples)
    predictor(run)               -> Predictor: raw user input -> output (`learnloop predict`, serving, app)
    generator(run)               -> ImageGenerator: a prompt -> an image grid (`learnloop generate`)
    needs                        -> {config key: recipes whose runs it accepts}: upstream runs it consumes

`run`, `resume`, `eval`, `lr-find` and `predict` work on these parts alone, for every recipe. A study
that trains nothing defines only `evaluate` (and maybe `data`). Registration is one decorator:

    @recipe("cnn-fashion", "small CNN on Fashion-MNIST", CnnConfig, target="test_accuracy >= 0.92")
    class ImageClassifier(Parts): ...

The family is the recipe module's name (learnloop/recipes/<family>.py or <family>/...); modules under
learnloop/recipes are discovered, not listed.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from learnloop.errors import UserError

INFRASTRUCTURE = {"base", "config", "runtime", "runs", "sections"}


@dataclass
class Bundle:
    """What `data()` hands to training and evaluation. `info` is JSON (written to the run folder as
    data.json) and is all `build()` may use; `extra` holds anything else evaluation needs."""

    train: Any = None
    val: Any = None
    test: Any = None
    info: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass
class Stage:
    """One trained part of a recipe: its task, loaders and `train` section; checkpoints/<name>/."""

    name: str                                         # "" = checkpoints/ itself (single-stage recipes)
    build: Callable[[dict], Any]                      # {earlier stage: trained Task} -> this stage's Task
    train: Any                                        # a TrainConfig section
    loaders: Callable[[Bundle], tuple] = lambda b: (b.train, b.val)
    monitor: str | None = "val_loss"
    mode: str = "min"
    callbacks: Callable[[Any], list] | None = None    # task -> extra callbacks (EMA, sample grids, ...)
    may_diverge: bool = False                         # divergence is a result (e.g. a bad init), not an error


class Predictor(ABC):
    """Turns raw user input into JSON-ready outputs. `inputs` names what `predict` expects on the command
    line (e.g. "image files (PNG/JPEG)", "texts"); `__call__` takes those strings, one result per input.
    Bad input (a missing file, an empty text) is a `UserError` naming it."""

    inputs: str = "inputs"

    @abstractmethod
    def __call__(self, raw: list[str]) -> list[dict]:
        """One JSON-serialisable dict per input."""

    @abstractmethod
    def examples(self, folder) -> list[str]:
        """A few valid raw inputs (files are written into `folder`), for `predict --help` and the tests."""


class ImageGenerator(ABC):
    """`learnloop generate RUN PROMPT --n N --guidance W --seed S`: a grid of `n` images for one prompt,
    written to `out` (default: the run's samples/ folder). `prompt` says what the prompt is (a caption, a
    class name); `guidance` is None where the model has no guidance scale (then a given scale is refused)."""

    prompt: str = "a prompt"
    guidance: float | None = None          # the default scale, None: the model takes none

    @abstractmethod
    def generate(self, prompt: str, n: int, seed: int, guidance: float | None, out=None) -> dict:
        """{"image": path of the PNG grid, ...}; a bad prompt or scale is a one-line `UserError`."""


class Parts:
    """Base class of a recipe's parts; override what the recipe has (see the module docstring)."""

    needs: dict[str, tuple[str, ...]] = {}

    def data(self, cfg, seed: int) -> Bundle:
        return Bundle()

    def build(self, cfg, info: dict):
        return None

    def stages(self, cfg, info: dict, upstream: dict) -> list[Stage]:
        if type(self).build is Parts.build:
            return []
        return [Stage("", lambda trained: self.build(cfg, info), cfg.train)]

    def evaluate(self, cfg, run, data: Bundle) -> dict:
        return {}

    def predictor(self, run) -> Predictor | None:
        return None

    def generator(self, run) -> ImageGenerator | None:
        return None


@dataclass
class Recipe:
    name: str
    summary: str
    config: type
    parts: Parts
    family: str
    target: str = ""                 # e.g. "test_accuracy >= 0.92"
    benchmark: str = ""              # the command that measures the target
    main_metric: str = ""
    smoke: dict | None = None        # tiny settings (dotted keys) for the all-recipes smoke test


_RECIPES: dict[str, Recipe] = {}


def recipe(name: str, summary: str, config: type, target: str = "", benchmark: str = "", main_metric: str = "",
           smoke: dict | None = None):
    """Register a `Parts` subclass as recipe `name` (one class may serve several recipes). `smoke` gives the
    tiny settings (dotted keys) with which tests/recipes/test_all_recipes.py runs it in seconds."""

    def register(parts_cls):
        if not (isinstance(parts_cls, type) and issubclass(parts_cls, Parts)):
            raise TypeError(f"@recipe('{name}') decorates a Parts subclass, got {parts_cls!r}")
        if name in _RECIPES:
            raise RuntimeError(f"recipe '{name}' is registered twice ({_RECIPES[name].parts!r}, {parts_cls!r})")
        module = parts_cls.__module__
        fam = module.split(".")[2] if module.startswith("learnloop.recipes.") else module
        _RECIPES[name] = Recipe(name, summary, config, parts_cls(), fam, target,
                                benchmark or f"learnloop run {name}", main_metric, smoke)
        return parts_cls

    return register


def recipes() -> dict[str, Recipe]:
    """Every registered recipe; recipe modules under learnloop/recipes are imported on first use."""
    import learnloop.recipes as package

    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.rsplit(".", 1)[-1] not in INFRASTRUCTURE:
            importlib.import_module(info.name)
    return _RECIPES


def get_recipe(name) -> Recipe:
    all_recipes = recipes()
    if not isinstance(name, str) or name not in all_recipes:
        shown = repr(name) if isinstance(name, str) else type(name).__name__
        raise UserError(f"unknown recipe {shown}; choose from: {', '.join(sorted(all_recipes))}")
    return all_recipes[name]

