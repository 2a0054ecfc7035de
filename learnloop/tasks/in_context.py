"""In-context regression as a `Task` (Garg et al., 2022, "What can transformers learn in-context?").

Each training sequence draws a new function f (here f(x) = w^T x, w ~ N(0, I_d)) and points x_i ~ N(0, I_d);
the model sees (x_1, f(x_1), ..., x_k) and predicts f(x_{k+1}) at every prefix. The loss is the squared
error averaged over prompt positions, divided by d so that predicting 0 scores 1:
    L = (1 / (n d)) sum_i (yhat_i - f(x_i))^2
Validation also reports `err_k`, the normalised error with k in-context examples (k = 0: zero-shot).
"""

from __future__ import annotations

import math

import torch

from learnloop.data.loader import EpochLoader
from learnloop.engine.optim import OptimConfig, build_optimizer
from learnloop.engine.task import Task


def linear_regression_prompts(batch: int, n_points: int, n_dims: int, g: torch.Generator
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    xs = torch.randn(batch, n_points, n_dims, generator=g)
    w = torch.randn(batch, n_dims, 1, generator=g)
    return xs, (xs @ w).squeeze(-1)


class PromptLoader(EpochLoader):
    """`batches` freshly drawn (xs, ys) prompt batches per epoch, seeded by (seed, epoch); with
    `fixed=True` every epoch repeats epoch 0 (a fixed validation set).

    The unit of the epoch order is a whole prompt batch: the global stream is the world_size=1 one,
    extended to ceil(batches / world_size) * world_size batches, and rank r keeps batches r, r + world_size,
    ... (every rank draws the whole stream, which is cheap, so the ranks together see the same prompts
    as one process)."""

    salt = 7

    def __init__(self, batches: int, batch_size: int, n_points: int, n_dims: int, seed: int = 0, fixed: bool = False,
                 *, rank: int = 0, world_size: int = 1):
        super().__init__(1, seed=seed, rank=rank, world_size=world_size)
        self.batches, self.prompts_per_batch, self.n_points, self.n_dims = batches, batch_size, n_points, n_dims
        self.fixed = fixed

    def size(self) -> int:
        return math.ceil(self.batches / self.world_size) * self.world_size

    def __iter__(self):
        g = self.generator(0 if self.fixed else None)
        mine = set(self.indices().tolist())
        for b in range(self.size()):
            prompts = linear_regression_prompts(self.prompts_per_batch, self.n_points, self.n_dims, g)
            if b in mine:
                yield prompts


class InContextRegression(Task):
    """`model(xs, ys)` -> (B, n) predictions of ys (entry i from the pairs before i); `optim` is a config's
    `train.optim` section (default AdamW at 1e-3)."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig | None = None):
        self.model, self.optim = model, optim if optim is not None else OptimConfig()
        self._sq: torch.Tensor | None = None
        self._n = 0

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return build_optimizer(self.optim, self.model.parameters())

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
