"""Callbacks: optional behaviour around the loop. Each hook receives the learner; a callback with state
(early stopping's counter, gradient statistics) returns it from `state_dict` so resumes are exact.

Hooks, in order: on_fit_start, on_epoch_start, on_after_backward (grads present, before clipping),
on_batch_end, on_epoch_end (with the epoch's metrics), on_fit_end.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch


class Callback:
    name: str = ""

    def on_fit_start(self, learner) -> None: ...
    def on_epoch_start(self, learner) -> None: ...
    def on_after_backward(self, learner) -> None: ...
    def on_batch_end(self, learner, outputs: dict) -> None: ...
    def on_epoch_end(self, learner, metrics: dict) -> None: ...
    def on_fit_end(self, learner) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar per epoch showing the running loss; silent when stderr is not a terminal."""

    name = "progress"

    def __init__(self, enabled: bool | None = None):
        self.enabled, self.bar = enabled, None

    def on_epoch_start(self, learner):
        from tqdm.auto import tqdm

        disable = None if self.enabled is None else not self.enabled
        self.bar = tqdm(total=len(learner.train_loader), desc=f"epoch {learner.epoch + 1}/{learner.epochs}",
                        leave=False, disable=disable, dynamic_ncols=True)

    def on_batch_end(self, learner, outputs):
        self.bar.update(1)
        if self.bar.n % 20 == 0 and "loss" in outputs:
            self.bar.set_postfix(loss=f"{_to_float(outputs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, learner, metrics):
        self.bar.close()
        if not self.bar.disable:
            shown = {k: v for k, v in metrics.items() if isinstance(v, float) and k not in ("time", "lr")}
            self.bar.write(f"epoch {metrics['epoch']}: " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items()))


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""

    name = "early_stopping"

    def __init__(self, monitor: str = "val_loss", patience: int = 3, mode: str = "min", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got '{mode}'")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best, self.bad_epochs = None, 0

    def on_epoch_end(self, learner, metrics):
        value = metrics.get(self.monitor)
        if value is None:
            return
        better = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                       else value > self.best + self.min_delta)
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                learner.request_stop(f"early stopping: {self.monitor} did not improve for {self.patience} epochs")

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state):
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


class GradNormStats(Callback):
    """Per-layer gradient L2 norms every `every` optimizer steps, for weight tensors (ndim >= 2).

    `records` is a list of {"step": s, "epoch": e, "norms": {layer: norm}}; the gradient-flow recipe plots it
    to show vanishing (norms shrinking toward the input) and exploding (growing) gradients."""

    name = "grad_norms"

    def __init__(self, every: int = 10):
        self.every, self.records, self._micro = every, [], 0

    def on_after_backward(self, learner):
        self._micro += 1
        if (self._micro - 1) % self.every:
            return
        norms = {}
        for mname, module in learner.task.modules().items():
            for pname, p in module.named_parameters():
                if p.grad is not None and p.ndim >= 2:
                    norms[f"{mname}.{pname}" if len(learner.task.modules()) > 1 else pname] = p.grad.norm().item()
        self.records.append({"step": learner.step, "epoch": learner.epoch, "norms": norms})

    def summary(self) -> dict[str, float]:
        """Mean norm per layer over all records."""
        acc = defaultdict(list)
        for r in self.records:
            for k, v in r["norms"].items():
                acc[k].append(v)
        return {k: sum(v) / len(v) for k, v in acc.items()}

    def state_dict(self):
        return {"records": self.records, "micro": self._micro}

    def load_state_dict(self, state):
        self.records, self._micro = state["records"], state["micro"]


class TensorBoardLogger(Callback):
    """Scalars per epoch as TensorBoard events in <run>/tensorboard (needs `pip install learnloop[track]`)."""

    name = "tensorboard"

    def __init__(self, log_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from learnloop.errors import UserError

            raise UserError("--track tensorboard needs the tensorboard package: pip install 'learnloop[track]'") from None
        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, learner, metrics):
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and k not in ("epoch", "step") and math.isfinite(v):
                self.writer.add_scalar(k, v, learner.step)
        self.writer.flush()

    def on_fit_end(self, learner):
        self.writer.close()


def _to_float(v) -> float:
    return float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
