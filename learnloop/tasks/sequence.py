"""Tasks over sequences: classification of padded batches and next-value regression.

- `SequenceClassification`: batches are (ids (B, T), lengths (B,), labels (B,)); the model is called as
  model(ids, lengths); loss and metrics as in `Classification`. Fine-tuning schemes are not part of the
  task: ULMFiT's discriminative rates come in as `param_groups` (e.g.
  `lambda m: discriminative_param_groups(m.groups(), lr, decay, wd)` from `learnloop.engine.optim`) and
  gradual unfreezing is the `GradualUnfreezing` callback.
- `SequenceRegression`: batches are (x (B, T, I), y (B, O)) or (x, lengths, y); loss is the mean squared
  error, validation adds the mean absolute error.
Language modelling, recurrent or not, is `learnloop.tasks.token_prediction.TokenPrediction`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from learnloop.engine.optim import OptimConfig, build_optimizer
from learnloop.engine.task import Task
from learnloop.tasks.classification import Classification


class SequenceClassification(Classification):
    """`param_groups(model)`, when given, returns the optimizer's param-group dicts (their own "lr" and
    "weight_decay" win over `optim`'s); otherwise every parameter trains at `optim.lr`."""

    def __init__(self, model, num_classes: int, optim: OptimConfig | None = None, *, label_smoothing: float = 0.0,
                 param_groups: Callable[[torch.nn.Module], list[dict]] | None = None):
        super().__init__(model, num_classes, optim, label_smoothing=label_smoothing)
        self.param_groups = param_groups

    def configure_optimizers(self):
        params = self.param_groups(self.model) if self.param_groups is not None else self.model.parameters()
        return build_optimizer(self.optim, params)

    def _step(self, batch):
        ids, lengths, y = batch[0], batch[1], batch[2]
        logits = self.model(ids, lengths)
        out = {"loss": self.loss_fn(logits, y)}
        with torch.no_grad():
            out.update({k: f(logits.detach(), y) for k, f in self.metrics.items()})
        return logits, y, out

    def predict_step(self, batch, learner):
        return self.model(batch[0], batch[1])


class SequenceRegression(Task):
    def __init__(self, model, optim: OptimConfig | None = None):
        self.model, self.optim = model, optim or OptimConfig(lr=3e-3)

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return build_optimizer(self.optim, self.model.parameters())

    def _predict(self, batch):
        return self.model(batch[0], batch[1]) if len(batch) == 3 else self.model(batch[0])

    def training_step(self, batch, learner):
        return {"loss": F.mse_loss(self._predict(batch), batch[-1])}

    def validation_step(self, batch, learner):
        pred = self._predict(batch)
        return {"loss": F.mse_loss(pred, batch[-1]), "mae": (pred - batch[-1]).abs().mean()}

    def predict_step(self, batch, learner):
        return self._predict(batch)
