"""Tasks over sequences: classification of padded batches and next-value regression.

- `SequenceClassification`: batches are (ids (B, T), lengths (B,), labels (B,)); the model is called as
  model(ids, lengths). Optional ULMFiT fine-tuning (Howard & Ruder, 2018):
    discriminative rates  eta_l = eta / decay^(L-1-l) for layer group l of L (the head gets eta);
    gradual unfreezing    in epoch e only the last min(e+1, L) groups train (e = 0: the head only).
- `SequenceRegression`: batches are (x (B, T, I), y (B, O)) or (x, lengths, y); loss is the mean squared error.
Language modelling, recurrent or not, is `learnloop.tasks.token_prediction.TokenPrediction`.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from learnloop.engine.optim import make_optimizer, param_groups
from learnloop.engine.task import Task
from learnloop.tasks.classification import Classification


class SequenceClassification(Classification):
    def __init__(self, model, num_classes: int, optimizer: str = "adamw", lr: float = 1e-3,
                 weight_decay: float = 0.0, discriminative_decay: float = 0.0, gradual_unfreeze: bool = False,
                 label_smoothing: float = 0.0):
        super().__init__(model, num_classes, optimizer, lr, weight_decay, label_smoothing=label_smoothing)
        self.decay, self.gradual = discriminative_decay, gradual_unfreeze
        self._frozen_epoch = None

    def _groups(self):
        return self.model.groups() if hasattr(self.model, "groups") else [list(self.model.parameters())]

    def configure_optimizers(self):
        groups = self._groups()
        if not self.decay:
            return super().configure_optimizers()
        out = []
        for k, params in enumerate(groups):
            lr = self.lr / self.decay ** (len(groups) - 1 - k)
            out.extend(param_groups(params, self.weight_decay, lr))
        return make_optimizer(self.optimizer, out, self.lr, self.weight_decay)

    def _apply_unfreezing(self, epoch: int) -> None:
        if not self.gradual or self._frozen_epoch == epoch:
            return
        groups = self._groups()
        trainable = min(epoch + 1, len(groups))
        for k, params in enumerate(groups):
            for p in params:
                p.requires_grad_(k >= len(groups) - trainable)
        self._frozen_epoch = epoch

    def _step(self, batch):
        ids, lengths, y = batch[0], batch[1], batch[2]
        logits = self.model(ids, lengths)
        out = {"loss": self.loss_fn(logits, y)}
        with torch.no_grad():
            out.update({k: f(logits.detach(), y) for k, f in self.metrics.items()})
        return logits, y, out

    def training_step(self, batch, learner):
        self._apply_unfreezing(learner.epoch)
        return self._step(batch)[2]

    def predict_step(self, batch, learner):
        return self.model(batch[0], batch[1])


class SequenceRegression(Task):
    def __init__(self, model, optimizer: str = "adamw", lr: float = 3e-3, weight_decay: float = 0.0):
        self.model, self.optimizer, self.lr, self.weight_decay = model, optimizer, lr, weight_decay

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return make_optimizer(self.optimizer, self.model.parameters(), self.lr, self.weight_decay)

    def _predict(self, batch):
        return self.model(batch[0], batch[1]) if len(batch) == 3 else self.model(batch[0])

    def training_step(self, batch, learner):
        return {"loss": F.mse_loss(self._predict(batch), batch[-1])}

    def validation_step(self, batch, learner):
        pred = self._predict(batch)
        return {"loss": F.mse_loss(pred, batch[-1]), "mae": (pred - batch[-1]).abs().mean()}

    def predict_step(self, batch, learner):
        return self._predict(batch)
