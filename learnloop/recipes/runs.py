"""Reusable runs: one function turns a run folder into its resolved config and its built, trained modules.

    run = load_run("runs/cnn-fashion/20261201-101500-ab12cd")          # best weights of every stage
    run.task, run.model, run.cfg.train.optim.lr, run.info["classes"], run.checkpoint("", "last")

It is the only way a recipe consumes an earlier run (declared in its parts' `needs`), the way `predict`
works, and what tuning, serving and the app use. Every file it reads is untrusted: config.json and
data.json are schema-checked, checkpoints are safetensors (never unpickled) and must fit the modules.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from learnloop.engine.checkpoint import load_module_state, load_state
from learnloop.engine.run import RunFolder
from learnloop.errors import CorruptFileError, UserError
from learnloop.recipes.base import Recipe, get_recipe
from learnloop.recipes.config import from_dict
from learnloop.utils.io import read_json

CHECKPOINTS = ("best", "last")
MAX_UPSTREAM_DEPTH = 4


@dataclass
class LoadedRun:
    """A run's config and trained tasks (by stage), as `evaluate`, `predictor` and later recipes see it."""

    folder: RunFolder
    recipe: Recipe
    cfg: object
    seed: int
    info: dict
    tasks: dict = field(default_factory=dict)          # stage name -> Task with the chosen weights
    upstream: dict = field(default_factory=dict)       # config key -> LoadedRun
    which: str = "best"
    diverged: dict = field(default_factory=dict)       # stage name -> message, for stages allowed to diverge
    callback_states: dict = field(default_factory=dict)  # stage name -> {callback name: state} of this session
    quiet: bool = True

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def plots(self) -> Path:
        return self.folder.plots

    @property
    def samples(self) -> Path:
        return self.folder.samples

    @property
    def task(self):
        """The task of the last stage (the only one for single-stage recipes)."""
        if not self.tasks:
            raise UserError(f"{self.path}: recipe '{self.recipe.name}' trains no model")
        return list(self.tasks.values())[-1]

    @property
    def model(self):
        """The last stage's module named "model" (or its first module)."""
        modules = self.task.modules()
        return modules.get("model", next(iter(modules.values())))

    def say(self, message: str) -> None:
        """A progress message for the person at the terminal, also kept in log.txt."""
        say(self.folder, self.quiet, message)

    def checkpoint_path(self, stage: str = "", which: str = "best") -> Path:
        base = self.folder.checkpoints / stage if stage else self.folder.checkpoints
        return base / f"{which}.safetensors"

    def checkpoint(self, stage: str = "", which: str = "best") -> dict | None:
        """A stage's checkpoint state (modules, callback states, history...), or None if there is none."""
        path = self.checkpoint_path(stage, which)
        return load_state(path) if path.is_file() else None

    def callback_state(self, stage: str, name: str) -> dict:
        """A callback's state after training a stage (this session's, else the `last` checkpoint's)."""
        if stage in self.callback_states:
            return self.callback_states[stage].get(name, {})
        state = self.checkpoint(stage, "last") or {}
        callbacks = state.get("callbacks", {}) if isinstance(state, dict) else {}
        value = callbacks.get(name, {}) if isinstance(callbacks, dict) else {}
        return value if isinstance(value, dict) else {}

    def history(self, stage: str | None = None) -> list[dict]:
        """metrics.jsonl rows (of one stage when `stage` is given; "" is the unnamed stage)."""
        rows = self.folder.history()
        return rows if stage is None else [r for r in rows if r.get("stage", "") == stage]


def say(folder: RunFolder, quiet: bool, message: str) -> None:
    """A progress message for the person at the terminal (stderr unless `quiet`), also kept in log.txt."""
    folder.log(message)
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def load_modules(task, state: dict, path) -> None:
    """Load a checkpoint's module weights into `task`, refusing names, shapes or non-finite values that do
    not fit (one line naming the file and the tensor)."""
    saved = state.get("modules") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        raise CorruptFileError(f"{path}: checkpoint has no 'modules' object")
    for name, module in task.modules().items():
        load_module_state(module, saved.get(name), path, f"modules.{name}")


def read_run_config(folder: RunFolder) -> tuple[Recipe, object, int, dict]:
    """(recipe, resolved config, seed, raw config.json) of a run folder, schema-checked."""
    raw = folder.config()                   # schema-checked: recipe, seed, config, ...
    recipe = get_recipe(raw["recipe"])
    cfg = from_dict(recipe.config, raw["config"], source=str(folder.config_path))
    return recipe, cfg, raw["seed"], raw


def read_info(folder: RunFolder) -> dict:
    path = folder.path / "data.json"
    if not path.is_file():
        raise UserError(f"{folder.path}: no data.json; this run was written by an older learnloop, re-run it")
    info = read_json(path)
    if not isinstance(info, dict):
        raise CorruptFileError(f"{path}: expected a JSON object")
    return info


def load_upstream(recipe: Recipe, cfg, depth: int = 0) -> dict:
    """The earlier runs a recipe's config points at ({config key: LoadedRun}), checked against `needs`."""
    out = {}
    for key, accepted in recipe.parts.needs.items():
        path = getattr(cfg, key, "")
        if not path:
            continue
        if depth >= MAX_UPSTREAM_DEPTH:
            raise UserError(f"{key}: runs that consume runs nest deeper than {MAX_UPSTREAM_DEPTH}")
        run = load_run(path, depth=depth + 1)
        if accepted and run.recipe.name not in accepted:
            raise UserError(f"{key}: {path} is a '{run.recipe.name}' run; expected one of: {', '.join(accepted)}")
        out[key] = run
    return out


def load_run(path, which: str = "best", *, device: str = "cpu", depth: int = 0) -> LoadedRun:
    """Load a run folder: resolved config, data info, and every stage's task with its `which` weights
    ("best", falling back to "last" for a stage that never recorded a best; or "last")."""
    if which not in CHECKPOINTS:
        raise UserError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got '{which}'")
    if not Path(path).is_dir():
        raise UserError(f"{path}: no such run folder")
    folder = RunFolder.open(path)
    recipe, cfg, seed, _ = read_run_config(folder)
    info = read_info(folder)
    upstream = load_upstream(recipe, cfg, depth)
    run = LoadedRun(folder, recipe, cfg, seed, info, upstream=upstream, which=which)
    for stage in recipe.parts.stages(cfg, info, upstream):
        task = stage.build(run.tasks)
        for m in task.modules().values():
            m.to(device)
            m.eval()
        ckpt = run.checkpoint_path(stage.name, which)
        if not ckpt.is_file():
            ckpt = run.checkpoint_path(stage.name, "last")
        if not ckpt.is_file():
            where = f"stage '{stage.name}'" if stage.name else "its model"
            raise UserError(f"{folder.path}: no checkpoint for {where} ({ckpt.parent}/{which}.safetensors); "
                            f"finish it with `learnloop resume {folder.path}`")
        load_modules(task, load_state(ckpt), ckpt)
        run.tasks[stage.name] = task
    return run
