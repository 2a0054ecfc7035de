"""In-context regression as a `Task` (Garg et al., 2022, "What can transformers learn in-context?").

Each training sequence draws a new function f (here f(x) = w^T x, w ~ N(0, I_d)) and points x_i ~ N(0, I_d);
the model sees (x_1, f(x_1), ..., x_k) and predicts f(x_{k+1}) at every prefix. The loss is the squared
error averaged over prompt positions, divided by d so that predicting 0 scores 1:
    L = (1 / (n d)) sum_i (yhat_i - f(x_i))^2
Validation also reports `err_k`, the normalised error with k in-context examples (k = 0: zero-shot).
"""

from __future__ import annotations

import torch

from learnloop.engine.optim import make_optimizer
from learnloop.engine.task import Task


def linear_regression_prompts(batch: int, n_points: int, n_dims: int, g: torch.Generator
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    xs = torch.randn(batch, n_points, n_dims, generator=g)
    w = torch.randn(batch, n_dims, 1, generator=g)
    return xs, (xs @ w).squeeze(-1)


class PromptLoader:
    """`batches` freshly drawn (xs, ys) prompt batches per epoch, seeded by (seed, epoch); with
    `fixed=True` every epoch repeats epoch 0 (a fixed validation set)."""

    def __init__(self, batches: int, batch_size: int, n_points: int, n_dims: int, seed: int = 0, fixed: bool = False):
        self.batches, self.batch_size, self.n_points, self.n_dims = batches, batch_size, n_points, n_dims
        self.seed, self.fixed, self.epoch = seed, fixed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + (0 if self.fixed else self.epoch) + 7)
        for _ in range(self.batches):
            yield linear_regression_prompts(self.batch_size, self.n_points, self.n_dims, g)


class InContextRegression(Task):
    def __init__(self, model: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 0.0):
        self.model, self.lr, self.weight_decay = model, lr, weight_decay
        self._sq: torch.Tensor | None = None
        self._n = 0

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return make_optimizer("adamw", self.model.parameters(), self.lr, self.weight_decay)

    def _errors(self, batch) -> torch.Tensor:
        xs, ys = batch
        return (self.model(xs, ys) - ys).square() / xs.shape[-1]          # (B, n)

    def training_step(self, batch, learner):
        return {"loss": self._errors(batch).mean()}

    def on_validation_start(self, learner, stage):
        self._sq, self._n = None, 0

    def validation_step(self, batch, learner):
        err = self._errors(batch)
        self._sq = err.sum(0) if self._sq is None else self._sq + err.sum(0)
        self._n += err.shape[0]
        return {"loss": err.mean()}

    def on_validation_end(self, learner, stage):
        per_k = (self._sq / max(self._n, 1)).tolist()
        return {f"err_{k}": v for k, v in enumerate(per_k)}
