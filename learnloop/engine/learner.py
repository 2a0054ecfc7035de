"""The training loop. It knows no model and no dataset: a `Task` (task.py) supplies the step logic.

One epoch: for each batch, `task.training_step`; in automatic mode the loss of micro-batch i is scaled
by 1/k_g (k_g = micro-batches in its accumulation group) so that k micro-batches of size b give exactly
the gradient of one batch of size k*b; then optional clipping of the global gradient norm
(||g|| > c  =>  g <- g * c / ||g||), optimizer steps, and one schedule step per optimizer step.
After the epoch: validation, callbacks, a metrics.jsonl line, then the `last` checkpoint (and `best`
when the monitored metric improved). A non-finite loss stops training with `TrainingDiverged` before
anything is written, so the last good checkpoint stays intact.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from typing import Iterable

import torch

from learnloop.engine.callbacks import Callback
from learnloop.engine.checkpoint import load_state, save_state
from learnloop.engine.run import RunFolder
from learnloop.engine.schedules import Schedule, ScheduleConfig
from learnloop.engine.task import Task
from learnloop.errors import TrainingDiverged, UserError
from learnloop.utils.seed import rng_state, set_rng_state

PRECISIONS = ("32", "bf16", "16")


def _to_float(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)


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
        if self.device.type == "cpu":
            return batch
        if isinstance(batch, (tuple, list)):
            return type(batch)(t.to(self.device, non_blocking=True) if torch.is_tensor(t) else t for t in batch)
        return batch.to(self.device)

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
        for cb in self.callbacks:
            cb.on_after_backward(self)
        self._clip_and_step(self.optimizers[name])
        if self.scaler is not None:
            self.scaler.update()

    # the loop --------------------------------------------------------------------------------------------
    def _train_epoch(self) -> dict[str, float]:
        self._set_train(True)
        loader = self.train_loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        n, k = len(loader), self.accumulate
        values: dict[str, list] = {}
        sizes: list[int] = []
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        for i, batch in enumerate(loader):
            batch = self.to_device(batch)
            with self.autocast():
                out = self.task.training_step(batch, self)
            if self.task.automatic_optimization:
                loss = out["loss"]
                self._check_finite(loss)
                group = min(k, n - (i // k) * k)
                scaled = loss / group if group > 1 else loss
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                if (i + 1) % k == 0 or i + 1 == n:
                    for cb in self.callbacks:
                        cb.on_after_backward(self)
                    for opt in self.optimizers.values():
                        self._clip_and_step(opt)
                    if self.scaler is not None:
                        self.scaler.update()
                    self._advance()
            else:
                self._advance()
            sizes.append(self.task.batch_size(batch))
            for key, v in out.items():
                values.setdefault(key, []).append(v.detach().float() if isinstance(v, torch.Tensor) else float(v))
            for cb in self.callbacks:
                cb.on_batch_end(self, out)
            if self.log_every and self.run is not None and self.step % self.log_every == 0 and \
                    (not self.task.automatic_optimization or (i + 1) % k == 0):
                self.run.append_metrics({"step": self.step, "epoch": self.epoch + (i + 1) / n,
                                         **{f"train_{key}": _to_float(v) for key, v in out.items()}})
        return self._weighted_means(values, sizes)

    def _advance(self) -> None:
        self.step += 1
        for s in self.schedules.values():
            s.step()

    @staticmethod
    def _weighted_means(values: dict[str, list], sizes: list[int]) -> dict[str, float]:
        if not sizes:
            return {}
        w = torch.tensor(sizes, dtype=torch.float64)
        means = {}
        for key, vs in values.items():
            t = torch.tensor([_to_float(v) for v in vs], dtype=torch.float64) if not all(
                isinstance(v, torch.Tensor) for v in vs) else torch.stack(vs).double().reshape(-1)
            if len(t) == len(w):
                means[key] = float((t * w).sum() / w.sum())
        return means

    @torch.no_grad()
    def validate(self, loader, stage: str = "val") -> dict[str, float]:
        self._set_train(False)
        self.task.on_validation_start(self, stage)
        values: dict[str, list] = {}
        sizes: list[int] = []
        for batch in loader:
            batch = self.to_device(batch)
            with self.autocast():
                out = self.task.validation_step(batch, self)
            sizes.append(self.task.batch_size(batch))
            for key, v in out.items():
                values.setdefault(key, []).append(v.detach().float() if isinstance(v, torch.Tensor) else float(v))
        metrics = {f"{stage}_{k}": v for k, v in self._weighted_means(values, sizes).items()}
        metrics.update({f"{stage}_{k}": float(v) for k, v in self.task.on_validation_end(self, stage).items()})
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
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.epoch < self.epochs and self.stop_reason is None:
            for cb in self.callbacks:
                cb.on_epoch_start(self)
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
            for cb in self.callbacks:
                cb.on_epoch_end(self, metrics)
            self.history.append(metrics)
            improved = self._improved(metrics)
            if improved and self.monitor in metrics:
                self.best = metrics[self.monitor]
            if self.run is not None:
                self.run.append_metrics({**metrics, **({"stage": self.name} if self.name else {})})
                self.save_checkpoint("last")
                if improved:
                    self._copy_checkpoint("last", "best")
        if self.stop_reason and self.run is not None:
            self.run.log(self.stop_reason)
        for cb in self.callbacks:
            cb.on_fit_end(self)
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
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.task.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
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

    def save_checkpoint(self, which: str = "last"):
        return save_state(self.checkpoint_path(which), self.state_dict())

    def _copy_checkpoint(self, src: str, dst: str) -> None:
        from learnloop.utils.io import atomic_path

        with atomic_path(self.checkpoint_path(dst)) as tmp:
            shutil.copyfile(self.checkpoint_path(src), tmp)

    def load_checkpoint(self, which: str = "last") -> None:
        self.load_state_dict(load_state(self.checkpoint_path(which)))

    def try_resume(self) -> bool:
        """Continue from `last` if it exists; drop metric lines logged after it. True if resumed."""
        path = self.checkpoint_path("last")
        if path is None or not path.exists():
            return False
        self.load_checkpoint("last")
        name, epoch, step = self.name, self.epoch, self.step
        self.run.truncate_metrics(lambda r: r.get("stage", "") != name or (
            r.get("epoch", 0) <= epoch and r.get("step", 0) <= step))
        self.run.log(f"resumed{' ' + name if name else ''} at epoch {epoch}, step {step}")
        return True
