"""The `Task` protocol: what a kind of learning contributes to the loop, so the loop knows no model.

A task owns its modules and says how one batch trains and evaluates. `Learner` (learner.py) owns
everything around that: epochs, devices, precision, accumulation, clipping, schedules, checkpoints,
callbacks, logging. Supervised classification lives in `learnloop.tasks`; adversarial, VAE, diffusion,
contrastive and ranking tasks implement the same methods.

Automatic optimisation (the default): `training_step` returns {"loss": tensor, ...other metrics}; the
learner scales, back-propagates, accumulates, clips and steps every optimizer. `loss` must be a mean over
the items the batch counts (samples, or non-ignored target tokens); the reserved key "count" (`COUNT`)
says how many that is (default `batch_size(batch)`). The learner weights each micro-batch by its count,
so an accumulated gradient is exactly the gradient of the mean over every counted item of the group, and
epoch metrics are count-weighted means; "count" itself is never logged.
Manual optimisation (`automatic_optimization = False`, e.g. GANs with alternating D/G updates): the step
calls `learner.backward(loss)` and `learner.optimizer_step(name)` itself and returns metrics only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from learnloop.errors import UserError

COUNT = "count"      # reserved step-output key: how many items (samples, tokens) the batch's mean is over


class Task(ABC):
    automatic_optimization: bool = True

    @abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every module whose weights are trained and checkpointed, by name."""

    @abstractmethod
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name; the learner attaches a schedule to each."""

    @abstractmethod
    def training_step(self, batch, learner) -> dict[str, Any]:
        """One batch of training; see the module docstring for automatic vs manual optimisation."""

    def validation_step(self, batch, learner) -> dict[str, Any]:
        """Metrics of one batch; the learner averages them weighted by the "count" key or `batch_size(batch)`."""
        return {}

    def predict_step(self, batch, learner):
        raise UserError(f"{type(self).__name__} has no predictions")

    # optional hooks -------------------------------------------------------------------------------
    def batch_size(self, batch) -> int:
        """Items in a batch: a tensor's first dimension; a tuple/list's first element; a dict's first tensor
        value (nested structures are searched depth first). Override to count something else (tokens)."""
        first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        if isinstance(first, torch.Tensor):
            return len(first)
        n = _leading_length(batch)
        if n is None:
            raise UserError(f"{type(self).__name__}.batch_size: no tensor in a {type(batch).__name__} batch; "
                            "override Task.batch_size")
        return n

    def on_validation_start(self, learner, stage: str) -> None:
        """Reset dataset-level accumulators (e.g. a confusion matrix)."""

    def on_validation_end(self, learner, stage: str) -> dict[str, float]:
        """Metrics that need the whole split (F1, AUC, FID ...); keys get the stage prefix."""
        return {}

    def on_epoch_end(self, learner, metrics: dict) -> None:
        """After validation of each epoch (e.g. write a sample grid)."""

    def state_dict(self) -> dict:
        """Extra state to checkpoint besides modules and optimizers (e.g. EMA weights, fixed noise)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _leading_length(obj) -> int | None:
    """First dimension of the first tensor in a (nested) batch; a list of plain values (e.g. strings)
    counts its items; None when nothing can be measured."""
    if isinstance(obj, torch.Tensor):
        return len(obj)
    if isinstance(obj, Mapping):
        t = _first_tensor(obj)
        return None if t is None else len(t)
    if isinstance(obj, (tuple, list)):
        if not obj:
            return 0
        if isinstance(obj[0], (torch.Tensor, Mapping, tuple, list)):
            return _leading_length(obj[0])
        return len(obj)
    return None


def _first_tensor(obj) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    values = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (tuple, list)) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None
