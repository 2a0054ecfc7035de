"""Running recipes: the Python API behind the CLI (`learnloop.run`, `learnloop.resume`, eval, lr-find)."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from learnloop.engine.run import RunFolder
from learnloop.errors import TrainingDiverged, UserError
from learnloop.recipes.base import Recipe, RunContext, registered
from learnloop.recipes.config import apply_overrides, from_dict, parse_set, to_dict, validate
from learnloop.utils.io import write_json
from learnloop.utils.seed import seed_everything

# modules that register recipes (imported on first use, so `learnloop --help` stays fast)
RECIPE_MODULES = (
    "learnloop.recipes.classic",
    "learnloop.recipes.sequence",
    "learnloop.recipes.gan",
    "learnloop.recipes.transformer",
    "learnloop.recipes.evaluation",
)
QUICKSTART = "mlp-digits"


def recipes() -> dict[str, Recipe]:
    for m in RECIPE_MODULES:
        importlib.import_module(m)
    return registered()


def get_recipe(name: str) -> Recipe:
    all_recipes = recipes()
    if name not in all_recipes:
        raise UserError(f"unknown recipe '{name}'; choose from: {', '.join(sorted(all_recipes))}")
    return all_recipes[name]


@dataclass
class Run:
    """What a finished run hands back: its folder, final metrics, config and in-memory outputs."""

    folder: Path
    metrics: dict
    config: object
    outputs: dict = field(default_factory=dict)

    @property
    def model(self):
        return self.outputs.get("model")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    import numpy
    import torch

    import learnloop

    return {"learnloop": learnloop.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def build_config(recipe: Recipe, overrides: dict | None = None, epochs: int | None = None):
    cfg = recipe.config()
    overrides = dict(overrides or {})
    if epochs is not None:
        if not hasattr(cfg, "epochs"):
            raise UserError(f"recipe '{recipe.name}' has no epochs setting")
        overrides["epochs"] = epochs
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def _execute(recipe: Recipe, cfg, ctx: RunContext) -> Run:
    start = time.perf_counter()
    seed_everything(ctx.seed)
    try:
        metrics = recipe.fn(cfg, ctx) or {}
    except TrainingDiverged as e:
        ctx.run.write_metrics({"status": "diverged", "error": str(e)})
        ctx.run.log(f"diverged: {e}")
        raise
    metrics = {**metrics, "status": "finished", "wall_time_s": round(time.perf_counter() - start, 2)}
    ctx.run.write_metrics(metrics)
    ctx.say(f"metrics: {ctx.run.metrics_path}")
    if any(ctx.run.plots.iterdir()):
        ctx.say(f"plots:   {ctx.run.plots}")
    return Run(ctx.run.path, metrics, cfg, ctx.outputs)


def run_recipe(name: str | None = None, *, set: list[str] | dict | None = None, seed: int = 0,
               out: str | os.PathLike = "runs", epochs: int | None = None, progress: bool | None = None,
               track: str | None = None, device: str = "cpu", quiet: bool = False, **fields) -> Run:
    """Run recipe `name` (None: the quickstart). `set` takes ["key=value", ...] or {key: value};
    other keyword arguments are config fields, e.g. `run("mlp-fashion", epochs=1, lr=3e-3)`."""
    recipe = get_recipe(name or QUICKSTART)
    overrides = parse_set(set) if isinstance(set, (list, tuple)) else dict(set or {})
    overrides.update(fields)
    if track not in (None, "", "none", "tensorboard"):
        raise UserError(f"--track must be 'tensorboard' (or omitted), got '{track}'")
    cfg = build_config(recipe, overrides, epochs)
    folder = RunFolder.create(out, recipe.name, {
        "recipe": recipe.name, "seed": seed, "config": to_dict(cfg), "track": track or None,
        "device": device, "versions": _versions(), "git_commit": _git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    ctx = RunContext(folder, seed=seed, progress=progress, track=track if track != "none" else None,
                     device=device, quiet=quiet)
    ctx.say(f"run folder: {folder.path}")
    return _execute(recipe, cfg, ctx)


def resume_run(run_dir, *, progress: bool | None = None, quiet: bool = False) -> Run:
    """Continue a run from its folder: same config and seed; each stage restarts from its last checkpoint."""
    folder = RunFolder.open(run_dir)
    config = folder.config()
    recipe = get_recipe(config.get("recipe", "?"))
    cfg = from_dict(recipe.config, config["config"])
    ctx = RunContext(folder, seed=config.get("seed", 0), resume=True, progress=progress,
                     track=config.get("track"), device=config.get("device", "cpu"), quiet=quiet)
    ctx.say(f"resuming run folder: {folder.path}")
    return _execute(recipe, cfg, ctx)


def evaluate_run(run_dir, *, progress: bool | None = None, quiet: bool = False) -> dict:
    """Re-evaluate a run's best checkpoint with its recipe's full metric set; writes eval.json."""
    folder = RunFolder.open(run_dir)
    config = folder.config()
    recipe = get_recipe(config.get("recipe", "?"))
    if recipe.evaluate is None:
        raise UserError(f"recipe '{recipe.name}' has no separate evaluation; see {folder.metrics_path}")
    cfg = from_dict(recipe.config, config["config"])
    ctx = RunContext(folder, seed=config.get("seed", 0), progress=progress, quiet=quiet)
    seed_everything(ctx.seed)
    metrics = recipe.evaluate(cfg, ctx)
    write_json(folder.path / "eval.json", metrics)
    return metrics


def lr_find_recipe(name: str, *, set: list[str] | None = None, seed: int = 0, out: str | os.PathLike = "runs",
                   steps: int = 100, lr_min: float = 1e-7, lr_max: float = 10.0):
    from learnloop.engine.lr_finder import lr_find

    recipe = get_recipe(name)
    if recipe.build is None:
        raise UserError(f"recipe '{name}' does not support lr-find (it is not a single supervised training)")
    cfg = build_config(recipe, parse_set(set))
    seed_everything(seed)
    learner = recipe.build(cfg)
    result = lr_find(learner, lr_min=lr_min, lr_max=lr_max, steps=steps)
    path = Path(out) / name / f"lr_find-{time.strftime('%Y%m%d-%H%M%S')}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    result.plot(path)
    return result, path
