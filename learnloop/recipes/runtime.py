"""The runtime: drives a recipe's parts for `run`, `resume`, `eval`, `lr-find` and `predict`.

    run:     config -> run folder -> data -> for each stage: build, fit (resumable), best weights back
             -> evaluate -> metrics.json
    resume:  the same from the folder's config; each stage continues from its `last` checkpoint, a
             finished stage is not trained again
    eval:    load_run (best weights) -> data -> evaluate -> eval.json
    lr-find: data -> the single stage's task -> LR range test
    predict: load_run -> predictor -> outputs
No recipe needs glue for any of these: they use only the declared parts (learnloop.recipes.base).
"""

from __future__ import annotations

import math

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from learnloop.engine.callbacks import EarlyStopping, ProgressBar, ReloadBest, TensorBoardLogger
from learnloop.engine.learner import Learner
from learnloop.engine.run import RunFolder
from learnloop.engine.schema import check_device, check_seed
from learnloop.errors import Interrupted, TrainingDiverged, UserError
from learnloop.recipes.base import Recipe, get_recipe, recipes
from learnloop.recipes.config import apply_overrides, flat_fields, parse_set, to_dict, validate
from learnloop.recipes.runs import LoadedRun, load_run, load_upstream, read_run_config, say
from learnloop.recipes.sections import learner_settings
from learnloop.utils.io import write_json
from learnloop.utils.seed import seed_everything

QUICKSTART = "mlp-digits"
TRACKERS = (None, "", "none", "tensorboard")

__all__ = ["Run", "evaluate_run", "get_recipe", "lr_find_recipe", "predict_run", "recipes", "resume_run",
           "run_recipe"]


@dataclass
class Run:
    """What a finished run hands back: its folder, final metrics, config and trained tasks."""

    folder: Path
    metrics: dict
    config: object
    loaded: LoadedRun | None = None

    @property
    def model(self):
        return self.loaded.model if self.loaded is not None and self.loaded.tasks else None

    @property
    def tasks(self) -> dict:
        return self.loaded.tasks if self.loaded is not None else {}


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
        leaves = flat_fields(cfg)
        key = "train.epochs" if "train.epochs" in leaves else "epochs" if "epochs" in leaves else None
        if key is None:
            raise UserError(f"recipe '{recipe.name}' has no single epochs setting; use --set (see `learnloop show "
                            f"{recipe.name}`)")
        overrides[key] = epochs
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    for key in recipe.parts.needs:                   # upstream runs are recorded as absolute paths, so the run
        path = getattr(cfg, key, "")                 # folder still finds them from another working directory
        if isinstance(path, str) and path:
            setattr(cfg, key, str(Path(path).absolute()))
    return cfg


class _Session:
    """One invocation's settings shared by the stages it trains."""

    def __init__(self, folder: RunFolder, seed: int, *, resume=False, progress=None, track=None, device="cpu",
                 quiet=False):
        self.folder, self.seed, self.resume = folder, seed, resume
        self.progress, self.track, self.device, self.quiet = progress, track, device, quiet

    def learner(self, stage, task, train, val) -> Learner:
        t = stage.train
        cbs = [ProgressBar(self.progress), *(stage.callbacks(task) if stage.callbacks else [])]
        if t.patience > 0 and stage.monitor:
            cbs.append(EarlyStopping(stage.monitor, t.patience, stage.mode))
        if self.track == "tensorboard":
            cbs.append(TensorBoardLogger(self.folder.path / "tensorboard" / stage.name))
        cbs.append(ReloadBest())                     # evaluation after fit sees the best weights
        return Learner(task, train, val, run=self.folder, name=stage.name, callbacks=cbs, device=self.device,
                       monitor=stage.monitor, mode=stage.mode, **learner_settings(t))


def _prepare(recipe: Recipe, cfg, seed: int):
    """Seed, upstream runs and data: everything that can fail on the user's input before training starts."""
    seed_everything(seed)
    return load_upstream(recipe, cfg), recipe.parts.data(cfg, seed)


def _train_and_evaluate(recipe: Recipe, cfg, session: _Session, prepared) -> Run:
    start = time.perf_counter()
    folder, parts = session.folder, recipe.parts
    upstream, data = prepared
    write_json(folder.path / "data.json", data.info)
    run = LoadedRun(folder, recipe, cfg, session.seed, data.info, upstream=upstream, quiet=session.quiet)
    for stage in parts.stages(cfg, data.info, upstream):
        task = stage.build(run.tasks)
        train, val = stage.loaders(data)
        learner = session.learner(stage, task, train, val)
        label = f"stage '{stage.name}'" if stage.name else "training"
        if session.resume:
            where = learner.try_resume()           # "epoch E, step S", or None
            done = learner.epoch >= learner.epochs or learner.stop_reason
            if where and done:
                run.say(f"{label}: finished earlier ({where})")
            elif where:
                run.say(f"{label}: resuming from {where}")
            else:
                run.say(f"{label}: no checkpoint to resume from; starting over")
        try:
            learner.fit()
        except TrainingDiverged as e:
            if not stage.may_diverge:
                raise
            run.diverged[stage.name] = str(e)
            run.say(f"{label} diverged: {e}")
        run.callback_states[stage.name] = {cb.name: cb.state_dict() for cb in learner.callbacks if cb.name}
        run.tasks[stage.name] = task
    metrics = parts.evaluate(cfg, run, data) or {}
    return _finish(folder, cfg, metrics, start, session.quiet, run)


def _finish(folder: RunFolder, cfg, metrics: dict, start: float, quiet: bool, run) -> Run:
    metrics = {**metrics, "status": "finished", "wall_time_s": round(time.perf_counter() - start, 2)}
    folder.write_metrics(metrics)
    say(folder, quiet, f"metrics: {folder.metrics_path}")
    if folder.plots.is_dir() and any(folder.plots.iterdir()):
        say(folder, quiet, f"plots:   {folder.plots}")
    return Run(folder.path, metrics, cfg, run)


def _execute(recipe: Recipe, cfg, session: _Session, prepared) -> Run:
    try:
        return _train_and_evaluate(recipe, cfg, session, prepared)
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted):
            raise
        raise Interrupted(session.folder.path) from None
    except TrainingDiverged as e:
        session.folder.write_metrics({"status": "diverged", "error": str(e)})
        session.folder.log(f"diverged: {e}")
        raise


def run_recipe(name: str | None = None, *, set: list[str] | dict | None = None, seed: int = 0,
               out: str | os.PathLike = "runs", epochs: int | None = None, progress: bool | None = None,
               track: str | None = None, device: str = "cpu", quiet: bool = False, **fields) -> Run:
    """Run recipe `name` (None: the quickstart). `set` takes ["key=value", ...] or {dotted key: value};
    other keyword arguments are config keys with "__" for ".", e.g. `run("mlp-fashion", train__epochs=1)`."""
    recipe = get_recipe(QUICKSTART if name is None else name)
    overrides = parse_set(set) if isinstance(set, (list, tuple)) else dict(set or {})
    overrides.update({k.replace("__", "."): v for k, v in fields.items()})
    if track not in TRACKERS:
        raise UserError(f"--track must be 'tensorboard' (or omitted), got {track!r}")
    seed, device = check_seed(seed, "seed"), check_device(device, "device")
    cfg = build_config(recipe, overrides, epochs)
    prepared = _prepare(recipe, cfg, seed)
    folder = RunFolder.create(out, recipe.name, {
        "recipe": recipe.name, "seed": seed, "config": to_dict(cfg), "track": track or None,
        "device": device, "versions": _versions(), "git_commit": _git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    session = _Session(folder, seed, progress=progress, track=track if track != "none" else None, device=device,
                       quiet=quiet)
    say(folder, quiet, f"run folder: {folder.path}")
    return _execute(recipe, cfg, session, prepared)


def resume_run(run_dir, *, progress: bool | None = None, quiet: bool = False) -> Run:
    """Continue a run from its folder: same config and seed; each stage restarts from its last checkpoint."""
    folder = RunFolder.open(run_dir)
    recipe, cfg, seed, raw = read_run_config(folder)
    track = raw.get("track") if raw.get("track") in TRACKERS else None
    device = check_device(raw.get("device", "cpu"), f"{folder.config_path}: device")
    for p in folder.remove_stale_temp_files():
        folder.log(f"removed {p.name}, left by an interrupted write")
    session = _Session(folder, seed, resume=True, progress=progress, track=track, device=device, quiet=quiet)
    say(folder, quiet, f"resuming run folder: {folder.path}")
    return _execute(recipe, cfg, session, _prepare(recipe, cfg, seed))


def evaluate_run(run_dir, *, progress: bool | None = None, quiet: bool = False) -> dict:
    """Re-evaluate a run's best checkpoints with its recipe's full metric set; writes eval.json."""
    folder = RunFolder.open(run_dir)
    recipe, cfg, seed, _ = read_run_config(folder)
    run = load_run(folder.path)
    run.quiet = quiet
    seed_everything(seed)
    metrics = recipe.parts.evaluate(cfg, run, recipe.parts.data(cfg, seed)) or {}
    folder.write_eval(metrics)
    return metrics


def lr_find_recipe(name: str, *, set: list[str] | None = None, seed: int = 0, out: str | os.PathLike = "runs",
                   steps: int = 100, lr_min: float = 1e-7, lr_max: float = 10.0):
    """Learning-rate range test on a recipe's single trained stage (automatic optimisation)."""
    from learnloop.engine.lr_finder import lr_find

    recipe = get_recipe(name)
    cfg = build_config(recipe, parse_set(set) if isinstance(set, (list, tuple)) else dict(set or {}))
    upstream, data = _prepare(recipe, cfg, check_seed(seed, "seed"))
    stages = recipe.parts.stages(cfg, data.info, upstream)
    if len(stages) != 1:
        raise UserError(f"lr-find needs a recipe that trains one model; '{name}' trains {len(stages)} "
                        "(run lr-find on the recipe of the part you want to tune)")
    stage = stages[0]
    task = stage.build({})
    if not task.automatic_optimization:
        raise UserError(f"lr-find needs one loss and one optimizer; '{name}' steps its optimizers itself")
    train, val = stage.loaders(data)
    learner = Learner(task, train, val, **learner_settings(stage.train))
    result = lr_find(learner, lr_min=lr_min, lr_max=lr_max, steps=steps)
    path = Path(out) / name / f"lr_find-{time.strftime('%Y%m%d-%H%M%S')}.png"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path.parent}: cannot write there ({e.strerror})") from None
    result.plot(path)
    return result, path


def predict_run(run_dir, inputs: list[str], *, which: str = "best") -> list[dict]:
    """Apply a run's predictor to raw inputs (file paths, texts, ids: what its recipe's predictor takes)."""
    run = load_run(run_dir, which)
    predictor = run.recipe.parts.predictor(run)
    if predictor is None:
        raise UserError(f"recipe '{run.recipe.name}' has no predictor (it makes no predictions from user input)")
    if not inputs:
        raise UserError(f"predict needs at least one input: {predictor.inputs}")
    return predictor(list(inputs))


MAX_GENERATE = 256
MAX_GUIDANCE = 50.0


def generate_run(run_dir, prompt: str, *, n: int = 16, seed: int = 0, guidance: float | None = None,
                 which: str = "best", out=None) -> dict:
    """A grid of `n` images for `prompt` from a run whose recipe generates (`Parts.generator`)."""
    run = load_run(run_dir, which)
    generator = run.recipe.parts.generator(run)
    if generator is None:
        raise UserError(f"recipe '{run.recipe.name}' does not generate images from a prompt")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_GENERATE:
        raise UserError(f"--n must be an integer between 1 and {MAX_GENERATE}, got {n}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise UserError(f"--seed must be an integer in [0, 2**63), got {seed}")
    if guidance is not None:
        if generator.guidance is None:
            raise UserError(f"recipe '{run.recipe.name}' has no guidance scale; leave out --guidance")
        if not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and 0 <= guidance <= MAX_GUIDANCE):
            raise UserError(f"--guidance must be a number between 0 and {MAX_GUIDANCE}, got {guidance}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f"the prompt is empty; give {generator.prompt}")
    return generator.generate(prompt, n, seed, generator.guidance if guidance is None else float(guidance), out)

