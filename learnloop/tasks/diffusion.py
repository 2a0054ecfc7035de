"""Denoising diffusion training as a `Task` (automatic optimisation): Ho, Jain & Abbeel (2020), Algorithm 1.

    repeat:  x_0 ~ data,  t ~ Uniform{0, ..., T-1},  eps ~ N(0, I)
             x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                       (learnloop.models.diffusion)
             gradient step on  w_t ||f_theta(x_t, t) - y||^2,  y = eps or v          (learnloop.losses.diffusion)

`inputs(batch)` turns a training batch into (x_0, model keyword arguments), by default (images, labels) ->
(images, {}); a conditional model gets e.g. {"context": ..., "context_mask": ...} here (the caption
dropout of classifier-free guidance belongs in that function). A validation batch is (t, eps, *batch):
fixed timesteps and noise drawn once, so val_loss is the same estimate every epoch and comparable between
checkpoints (`fixed_validation` builds such tensors). t and eps come from the global RNG, which the Learner
checkpoints, so a resumed run draws the same numbers.

EMA weights for sampling and the per-epoch sample grid are engine callbacks (learnloop.engine.ema.EMA,
learnloop.engine.callbacks.SampleGrid) that a recipe passes as `callbacks`. `time_budget_s` stops training
after the epoch in which the process has used that much CPU time (as the adversarial task does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from learnloop.engine.optim import OptimConfig, build_optimizer
from learnloop.engine.task import Task
from learnloop.losses.diffusion import diffusion_loss, min_snr_weights
from learnloop.models.diffusion import Diffusion, check_prediction


def image_inputs(batch) -> tuple[torch.Tensor, dict]:
    """(images, labels, ...) -> (images, {}): an unconditional model."""
    return batch[0], {}


def fixed_validation(images: torch.Tensor, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, eps) for `images`, drawn once with `seed`: the validation loss's fixed timesteps and noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, T, (len(images),), generator=g)
    return t, torch.randn(images.shape, generator=g)


class DiffusionTask(Task):
    def __init__(self, model: nn.Module, diffusion: Diffusion, optim: OptimConfig | None = None, *,
                 prediction: str = "eps", min_snr_gamma: float = 0.0,
                 inputs: Callable[[object], tuple[torch.Tensor, dict]] = image_inputs, callbacks: Sequence = (),
                 time_budget_s: float = 0.0):
        check_prediction(prediction)
        self.model, self.diffusion, self.optim = model, diffusion, optim or OptimConfig()
        self.prediction, self.min_snr_gamma, self.inputs = prediction, float(min_snr_gamma), inputs
        self.callbacks, self.time_budget_s = list(callbacks), float(time_budget_s)
        self.elapsed = 0.0
        self._cpu_mark: float | None = None

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return build_optimizer(self.optim, self.model.parameters())

    def loss(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, model_kwargs: dict | None = None
             ) -> torch.Tensor:
        """w_t ||f(x_t, t) - y||^2 averaged over the batch, for given t and eps."""
        x_t = self.diffusion.q_sample(x0, t, noise)
        output = self.model(x_t, t, **(model_kwargs or {}))
        target = self.diffusion.target(x0, noise, t, self.prediction)
        weights = min_snr_weights(self.diffusion.snr(t), self.min_snr_gamma, self.prediction) \
            if self.min_snr_gamma > 0 else None
        return diffusion_loss(output, target, weights)

    def training_step(self, batch, learner):
        if self._cpu_mark is None:
            self._cpu_mark = time.process_time()
        x0, kwargs = self.inputs(batch)
        t = torch.randint(0, self.diffusion.T, (len(x0),), device=x0.device)
        noise = torch.randn_like(x0)
        return {"loss": self.loss(x0, t, noise, kwargs)}

    def validation_step(self, batch, learner):
        t, noise, *rest = batch
        x0, kwargs = self.inputs(rest)
        return {"loss": self.loss(x0, t, noise, kwargs)}

    def on_epoch_end(self, learner, metrics):
        now = time.process_time()        # CPU seconds of all threads: a budget that contention does not shrink
        self.elapsed += now - (self._cpu_mark if self._cpu_mark is not None else now)
        self._cpu_mark = now
        metrics["cpu_min"] = self.elapsed / 60
        if self.time_budget_s and self.elapsed >= self.time_budget_s and learner.stop_reason is None \
                and learner.epoch < learner.epochs:
            learner.request_stop(f"budget of {self.time_budget_s / 60:.3g} CPU minutes reached after epoch "
                                 f"{learner.epoch}")

    def state_dict(self):
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state):
        if state:
            self.elapsed = float(state["elapsed"])
