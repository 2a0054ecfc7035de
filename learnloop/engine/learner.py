"""The training loop. It knows no model and no dataset: a `Task` (task.py) supplies the step logic.

One epoch: for each batch, `task.training_step`. In automatic mode micro-batches are accumulated in
groups of `accumulate`; micro-batch i reports the mean loss L_i over its n_i counted items (the step's
"count", default `task.batch_size(batch)`: samples, or non-ignored tokens), and the group's gradient is

    g = sum_i n_i * grad L_i / sum_i n_i,

the gradient of the mean over every counted item of the group, i.e. exactly what one big batch gives,
also for a ragged last group and for token losses with unevenly ignored positions (each loss is
back-propagated with weight n_i / n_ref, then the summed gradient is divided by sum_i n_i / n_ref).
Then optional clipping of the global gradient norm (||g|| > c  =>  g <- g * c / ||g||), optimizer steps,
and one schedule step per optimizer step. Epoch metrics are means weighted by the same counts.
After the epoch: validation, callbacks (events and their order: callbacks.py), then the `last`
checkpoint, a copy as `best` when the monitored metric improved, and only then the metrics.jsonl row, so
every row belongs to an epoch some checkpoint holds. A resume rewrites the stage's rows from the
checkpoint's own history (without a checkpoint, drops them and starts over; the run folder does the
rewriting: `RunFolder.sync_stage_rows`), so history and checkpoints always agree. A non-finite loss stops
training with `TrainingDiverged` before anything is written, so the last good checkpoint stays intact.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Mapping
from typing import Iterable

import torch

from learnloop.engine.callbacks import HOOKS, Callback, overrides
from learnloop.engine.checkpoint import load_module_state, load_optimizer_state, load_state, save_state
from learnloop.engine.schema import TRAINING_STATE_KEYS
from learnloop.engine.run import RunFolder, stage_row
from learnloop.engine.schedules import Schedule, ScheduleConfig
from learnloop.engine.task import COUNT, Task
from learnloop.errors import TrainingDiverged, UserError
from learnloop.utils.seed import rng_state, set_rng_state

PRECISIONS = ("32", "bf16", "16")


def _to_float(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


def _move(obj, device: torch.device):
    """`obj` with every tensor moved to `device`: tensors, (named) tuples, lists and dicts, nested."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        moved = {k: _move(v, device) for k, v in obj.items()}
        try:
            return type(obj)(moved)
        except TypeError:                       # e.g. defaultdict: a plain dict carries the same batch
            return moved
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_move(v, device) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_move(v, device) for v in obj)
    if hasattr(obj, "to") and not isinstance(obj, (str, bytes)):
        return obj.to(device)
    return obj


class Learner:
    def __init__(self, task: Task, train_loader=None, val_loader=None, *, epochs: int = 1,
                 run: RunFolder | None = None, name: str = "", callbacks: Iterable[Callback] = (),
                 schedule: ScheduleConfig | None = None, accumulate: int = 1,
                 clip_grad_norm: float | None = None, precision: str = "32", device: str = "cpu",
                 monitor: str | None = "val_loss", mode: str = "min", log_every: int = 0):
        if accumulate < 1:
            raise UserError(f"accumulate must be >= 1, got {accumulate}")
        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        self.device = torch.device(device)
        if precision == "16" and self.device.type != "cuda":
            raise UserError("precision '16' (float16 with loss scaling) needs a CUDA device; use 'bf16' on CPU")
        self.task, self.train_loader, self.val_loader = task, train_loader, val_loader
        self.epochs, self.run, self.name = epochs, run, name
        self.callbacks = list(callbacks)
        self.accumulate, self.clip, self.precision = accumulate, clip_grad_norm, precision
        self.monitor, self.mode, self.log_every = monitor, mode, log_every
        for m in task.modules().values():
            m.to(self.device)
        opts = task.configure_optimizers()
        self.optimizers = opts if isinstance(opts, dict) else {"main": opts}
        self.scaler = torch.amp.GradScaler("cuda") if precision == "16" else None
        self.schedules: dict[str, Schedule] = {}
        if train_loader is not None:
            steps = len(train_loader)
            per_epoch = math.ceil(steps / accumulate) if task.automatic_optimization else steps
            for k, opt in self.optimizers.items():
                self.schedules[k] = Schedule(opt, schedule or ScheduleConfig(), per_epoch * epochs)
        self.epoch, self.step, self.best = 0, 0, None
        self.history: list[dict] = []
        self.stop_reason: str | None = None
        self._last_improved = False            # did the latest finished epoch write `best`?
        self._refresh_hooks()

    def _refresh_hooks(self) -> None:
        """Bound hooks per event, only of callbacks that override them (re-read at fit and validation)."""
        self._hooks = {h: [getattr(cb, h) for cb in self.callbacks if overrides(cb, h)] for h in HOOKS}

    # ----------------------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self):
        if self.run is None:
            return None
        return self.run.checkpoints / self.name if self.name else self.run.checkpoints

    def checkpoint_path(self, which: str = "last"):
        return None if self.run is None else self.checkpoint_dir / f"{which}.safetensors"

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason

    def autocast(self):
        if self.precision == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def to_device(self, batch):
        """The batch on the learner's device: a tensor, or tuples, lists and dicts of them (nested)."""
        if self.device.type == "cpu":
            return batch
        return _move(batch, self.device)

    def _set_train(self, mode: bool) -> None:
        for m in self.task.modules().values():
            m.train(mode)

    def _check_finite(self, loss: torch.Tensor, what: str = "loss") -> None:
        if not torch.isfinite(loss).all():
            last = self.checkpoint_path("last")
            kept = f"; last good checkpoint: {last}" if last is not None and last.exists() else ""
            raise TrainingDiverged(
                f"{what} became {_to_float(loss.float().sum())} at epoch {self.epoch + 1}, step {self.step}{kept}")

    # manual-optimisation helpers (GANs and other multi-optimizer tasks) ----------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate `loss` (loss scaling under precision "16"); NaN/Inf raises TrainingDiverged."""
        self._check_finite(loss)
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()

    def _clip_and_step(self, opt: torch.optim.Optimizer) -> None:
        params = [p for g in opt.param_groups for p in g["params"]]
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        if self.clip:
            norm = torch.nn.utils.clip_grad_norm_(params, self.clip)
            self._check_finite(norm, "gradient norm")
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    def optimizer_step(self, name: str = "main") -> None:
        """Clip and step optimizer `name`, firing on_after_backward before and on_after_optimizer_step after."""
        if name not in self.optimizers:
            raise UserError(f"no optimizer '{name}'; the task has {', '.join(self.optimizers)}")
        for hook in self._hooks["on_after_backward"]:
            hook(self)
        self._clip_and_step(self.optimizers[name])
        if self.scaler is not None:
            self.scaler.update()
        for hook in self._hooks["on_after_optimizer_step"]:
            hook(self, name)

    # the loop --------------------------------------------------------------------------------------------
    def _count(self, out: dict, batch) -> float:
        count = out.get(COUNT)
        if count is None:
            return self.task.batch_size(batch)
        try:
            count = _to_float(count)
        except (TypeError, ValueError, RuntimeError):
            what = tuple(count.shape) if isinstance(count, torch.Tensor) else type(count).__name__
            raise UserError(f"{type(self.task).__name__} step returned {COUNT} {what}; it must be one number >= 0"
                            ) from None
        if not count >= 0 or math.isinf(count):
            raise UserError(f"{type(self.task).__name__} step returned {COUNT}={count}; it must be a number >= 0")
        return count

    def _train_epoch(self) -> dict[str, float]:
        self._set_train(True)
        loader = self.train_loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        n, k = len(loader), self.accumulate
        auto = self.task.automatic_optimization
        before_batch, after_loss = self._hooks["on_before_batch"], self._hooks["on_after_loss"]
        batch_end = self._hooks["on_batch_end"]
        values: dict[str, list] = {}
        sizes: list[float] = []
        ref, units, counted = 0.0, 0.0, False     # group: first positive count, sum of count / ref, any count
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(loader):
            batch = self.to_device(batch)
            for hook in before_batch:
                hook(self, batch)
            with self.autocast():
                out = self.task.training_step(batch, self)
            count = self._count(out, batch)
            if auto:
                loss = out["loss"]
                for hook in after_loss:
                    hook(self, loss)
                if count > 0:                      # a micro-batch with nothing counted adds no gradient
                    self._check_finite(loss)
                    if k > 1:
                        ref = ref or count
                        if count != ref:
                            loss = loss * (count / ref)
                        units += count / ref
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                    counted = True
                if (i + 1) % k == 0 or i + 1 == n:
                    self._finish_group(units if k > 1 else 1.0, counted)
                    ref, units, counted = 0.0, 0.0, False
            else:
                self._advance()
            sizes.append(count)
            for key, v in out.items():
                if key != COUNT:
                    values.setdefault(key, []).append((len(sizes) - 1, v.detach() if isinstance(v, torch.Tensor)
                                                       else float(v)))
            for hook in batch_end:
                hook(self, out)
            if self.log_every and self.run is not None and self.step % self.log_every == 0 and \
                    (not auto or (i + 1) % k == 0):
                self.run.append_metrics({"step": self.step, "epoch": self.epoch + (i + 1) / n,
                                         **{f"train_{key}": _to_float(v) for key, v in out.items() if key != COUNT},
                                         **({"stage": self.name} if self.name else {})})
        return self._weighted_means(values, sizes)

    def _finish_group(self, units: float, counted: bool) -> None:
        """End of an accumulation group: mean gradient, hooks, clip + step every optimizer, schedules."""
        if counted:
            if units != 1.0:
                grads = {id(p): p.grad for opt in self.optimizers.values() for g in opt.param_groups
                         for p in g["params"] if p.grad is not None}
                with torch.no_grad():
                    for grad in grads.values():
                        grad.div_(units)
            for hook in self._hooks["on_after_backward"]:
                hook(self)
            for name, opt in self.optimizers.items():
                self._clip_and_step(opt)
                for hook in self._hooks["on_after_optimizer_step"]:
                    hook(self, name)
            if self.scaler is not None:
                self.scaler.update()
        else:                                      # nothing counted in the whole group: no update
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
        self._advance()

    def _advance(self) -> None:
        self.step += 1
        for s in self.schedules.values():
            s.step()

    @staticmethod
    def _weighted_means(values: dict[str, list], sizes: list[float]) -> dict[str, float]:
        """Count-weighted means over the batches that reported each key (a critic updated every k batches
        reports its loss on those only); batches with count 0 are left out (their mean may be NaN)."""
        if not sizes:
            return {}
        w_all = torch.tensor(sizes, dtype=torch.float64)
        means = {}
        for key, pairs in values.items():
            index = torch.tensor([i for i, _ in pairs], dtype=torch.long)
            vs = [v for _, v in pairs]
            t = torch.stack(vs).to(torch.float64).reshape(-1) if all(isinstance(v, torch.Tensor) for v in vs) \
                else torch.tensor([_to_float(v) for v in vs], dtype=torch.float64)
            if len(t) != len(index):               # a key whose values are not one number per batch
                continue
            w = w_all[index]
            keep = w > 0
            means[key] = float((t[keep] * w[keep]).sum() / w[keep].sum()) if keep.any() else math.nan
        return means

    @torch.no_grad()
    def validate(self, loader, stage: str = "val") -> dict[str, float]:
        """Count-weighted means of `validation_step` over `loader`, keys prefixed with `stage`."""
        self._refresh_hooks()
        self._set_train(False)
        for hook in self._hooks["on_before_validation"]:
            hook(self, stage)
        self.task.on_validation_start(self, stage)
        values: dict[str, list] = {}
        sizes: list[float] = []
        for batch in loader:
            batch = self.to_device(batch)
            with self.autocast():
                out = self.task.validation_step(batch, self)
            sizes.append(self._count(out, batch))
            for key, v in out.items():
                if key != COUNT:
                    values.setdefault(key, []).append((len(sizes) - 1, v.detach() if isinstance(v, torch.Tensor)
                                                       else float(v)))
        metrics = {f"{stage}_{k}": v for k, v in self._weighted_means(values, sizes).items()}
        metrics.update({f"{stage}_{k}": float(v) for k, v in self.task.on_validation_end(self, stage).items()})
        for hook in self._hooks["on_after_validation"]:
            hook(self, stage, metrics)
        self._set_train(True)
        return metrics

    @torch.no_grad()
    def predict(self, loader) -> torch.Tensor:
        self._set_train(False)
        outs = [self.task.predict_step(self.to_device(b), self) for b in loader]
        self._set_train(True)
        return torch.cat(outs)

    def _improved(self, metrics: dict) -> bool:
        if self.monitor is None or self.monitor not in metrics:
            return True                       # nothing to monitor: the latest is the best
        v = metrics[self.monitor]
        if self.best is None:
            return True
        return v < self.best if self.mode == "min" else v > self.best

    def fit(self, resume: bool = False) -> list[dict]:
        if self.train_loader is None:
            raise UserError("fit() needs a train_loader")
        if resume:
            self.try_resume()
        self._refresh_hooks()
        for hook in self._hooks["on_fit_start"]:
            hook(self)
        while self.epoch < self.epochs and self.stop_reason is None:
            for hook in self._hooks["on_epoch_start"]:
                hook(self)
            t0 = time.perf_counter()
            train = self._train_epoch()
            first_opt = next(iter(self.optimizers.values()))
            metrics = {"epoch": self.epoch + 1, "step": self.step, "lr": first_opt.param_groups[0]["lr"],
                       **{f"train_{k}": v for k, v in train.items()}}
            if self.val_loader is not None:
                metrics.update(self.validate(self.val_loader, "val"))
            metrics["time"] = time.perf_counter() - t0
            self.epoch += 1
            self.task.on_epoch_end(self, metrics)
            for hook in self._hooks["on_epoch_end"]:
                hook(self, metrics)
            self.history.append(metrics)
            improved = self._improved(metrics)
            if improved and self.monitor in metrics:
                self.best = metrics[self.monitor]
            self._last_improved = improved
            if self.run is not None:
                # checkpoints first, then the row: a killed run never has a row no checkpoint holds, and a
                # resume re-copies `best` if the kill came between `last` and its copy
                self.save_checkpoint("last")
                if improved:
                    self._copy_checkpoint("last", "best")
                self.run.append_metrics(stage_row(metrics, self.name))
        if self.stop_reason and self.run is not None:
            self.run.log(self.stop_reason)
        for hook in self._hooks["on_fit_end"]:
            hook(self)
        return self.history

    # checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "modules": {k: m.state_dict() for k, m in self.task.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedules": {k: s.state_dict() for k, s in self.schedules.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "task": self.task.state_dict(),
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks if cb.name},
            "rng": rng_state(),
            "epoch": self.epoch, "step": self.step, "best": self.best, "history": self.history,
            "stop_reason": self.stop_reason, "improved": self._last_improved,
        }

    def load_state_dict(self, state: dict, file="checkpoint") -> None:
        """Restore a `state_dict()`; weights and optimizer states that do not fit are one-line errors."""
        for k, m in self.task.modules().items():
            load_module_state(m, state["modules"].get(k), file, f"modules.{k}")
        for k, o in self.optimizers.items():
            load_optimizer_state(o, state["optimizers"].get(k), file, f"optimizers.{k}")
        for k, s in self.schedules.items():
            if k in state["schedules"]:
                s.load_state_dict(state["schedules"][k])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state["task"])
        for cb in self.callbacks:
            if cb.name in state["callbacks"]:
                cb.load_state_dict(state["callbacks"][cb.name])
        set_rng_state(state["rng"])
        self.epoch, self.step, self.best = state["epoch"], state["step"], state["best"]
        self.history, self.stop_reason = list(state["history"]), state["stop_reason"]
        self._last_improved = bool(state.get("improved", False))

    def save_checkpoint(self, which: str = "last"):
        return save_state(self.checkpoint_path(which), self.state_dict())

    def _copy_checkpoint(self, src: str, dst: str) -> None:
        from learnloop.utils.io import atomic_path

        with atomic_path(self.checkpoint_path(dst)) as tmp:
            shutil.copyfile(self.checkpoint_path(src), tmp)

    def load_checkpoint(self, which: str = "last") -> None:
        path = self.checkpoint_path(which)
        self.load_state_dict(load_state(path, require=TRAINING_STATE_KEYS), path)

    def try_resume(self) -> str | None:
        """Continue from this stage's `last` checkpoint. Returns what it resumed from ("epoch 3, step 420")
        or None when there is nothing to resume (the stage starts over). Either way the stage's rows in
        metrics.jsonl are made to agree with the checkpoint: epoch rows are rewritten from the checkpoint's
        own history, step rows (`log_every`) past its step are dropped; with no checkpoint all of the
        stage's rows go, so a restarted stage never duplicates history (`RunFolder.sync_stage_rows`)."""
        if self.run is None:
            return None
        stage = f" {self.name}" if self.name else ""
        path = self.checkpoint_path("last")
        if not path.exists():
            dropped = self.run.sync_stage_rows(self.name, [], -1)
            if dropped:
                self.run.log(f"no checkpoint{stage} to resume from: starting over, dropped {dropped} metric rows")
            return None
        self.load_checkpoint("last")
        if self._last_improved:                # a kill between `last` and its copy as `best`
            self._copy_checkpoint("last", "best")
        self.run.sync_stage_rows(self.name, self.history, self.step)
        where = f"epoch {self.epoch}, step {self.step}"
        self.run.log(f"resumed{stage} at {where}")
        return where
