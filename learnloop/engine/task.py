"""The `Task` protocol: what a kind of learning contributes to the loop, so the loop knows no model.

A task owns its modules and says how one batch trains and evaluates. `Learner` (learner.py) owns
everything around that: epochs, devices, precision, accumulation, clipping, schedules, checkpoints,
callbacks, logging. Supervised classification lives in `learnloop.tasks`; adversarial, VAE, diffusion,
contrastive and ranking tasks implement the same methods.

Automatic optimisation (the default): `training_step` returns {"loss": tensor, ...other metrics}; the
learner scales, back-propagates, accumulates, clips and steps every optimizer.
Manual optimisation (`automatic_optimization = False`, e.g. GANs with alternating D/G updates): the step
calls `learner.backward(loss)` and `learner.optimizer_step(name)` itself and returns metrics only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


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
        """Metrics of one batch; the learner averages them weighted by `batch_size(batch)`."""
        return {}

    def predict_step(self, batch, learner):
        from learnloop.errors import UserError

        raise UserError(f"{type(self).__name__} has no predictions")

    # optional hooks -------------------------------------------------------------------------------
    def batch_size(self, batch) -> int:
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return len(first)

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
