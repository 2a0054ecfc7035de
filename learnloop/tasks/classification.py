"""Supervised classification as a `Task`: loss and metrics are pluggable functions of (logits, labels).

Validation also accumulates the confusion matrix, from which macro-F1 is reported for the split.
"""

from __future__ import annotations

from typing import Callable

import torch

from learnloop.engine.optim import OptimConfig, build_optimizer
from learnloop.engine.task import Task
from learnloop.losses.classification import classification_loss
from learnloop.metrics.classification import accuracy, confusion_matrix, precision_recall_f1, predictions

Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Classification(Task):
    def __init__(self, model: torch.nn.Module, num_classes: int, optim: OptimConfig | None = None, *,
                 loss_fn: Callable | None = None, metrics: dict[str, Metric] | None = None,
                 label_smoothing: float = 0.0):
        self.model, self.num_classes = model, num_classes
        self.optim = optim or OptimConfig()
        self.loss_fn = loss_fn or (lambda z, y: classification_loss(z, y, label_smoothing))
        self.metrics = {"accuracy": accuracy} if metrics is None else metrics
        self.confusion: dict[str, torch.Tensor] = {}
        self._stage = "val"

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return build_optimizer(self.optim, self.model.parameters())

    def _step(self, batch):
        x, y = batch[0], batch[1]
        logits = self.model(x)
        out = {"loss": self.loss_fn(logits, y)}
        with torch.no_grad():
            out.update({k: f(logits.detach(), y) for k, f in self.metrics.items()})
        return logits, y, out

    def training_step(self, batch, learner):
        return self._step(batch)[2]

    def on_validation_start(self, learner, stage):
        n = max(self.num_classes, 2)
        self.confusion[stage] = torch.zeros(n, n, dtype=torch.long)
        self._stage = stage

    def validation_step(self, batch, learner):
        logits, y, out = self._step(batch)
        cm = self.confusion[self._stage]
        cm += confusion_matrix(predictions(logits).cpu(), y.cpu(), cm.shape[0])
        return {k: v.detach() for k, v in out.items()}

    def on_validation_end(self, learner, stage):
        return {"macro_f1": float(precision_recall_f1(self.confusion[stage])["macro_f1"])}

    def predict_step(self, batch, learner):
        return self.model(batch[0])
