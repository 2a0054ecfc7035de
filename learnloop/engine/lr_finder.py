"""Learning-rate range test (Smith, 2017; popularised by fastai's `lr_find`).

The rate grows geometrically, lr_i = lr_min * (lr_max / lr_min) ** (i / (n - 1)), one training batch per
value. The loss is smoothed with a debiased exponential moving average
    s_i = beta * s_{i-1} + (1 - beta) * loss_i,   smoothed_i = s_i / (1 - beta ** (i + 1))
and the sweep stops once smoothed_i > diverge * min(smoothed). The suggestion is the rate where the
smoothed loss falls fastest (most negative d smoothed / d log lr) before its minimum, ignoring the first
10% of the sweep (EMA warm-up). The model,
optimizer and RNG states are restored afterwards, so the sweep leaves no trace on training.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from learnloop.errors import UserError
from learnloop.utils.seed import rng_state, set_rng_state


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]          # smoothed
    suggestion: float
    min_loss_lr: float

    def plot(self, path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from learnloop.utils.io import save_figure

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.axvline(self.suggestion, color="C3", ls="--", label=f"suggested lr = {self.suggestion:.2e}")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("smoothed training loss")
        ax.set_title("LR range test")
        ax.legend()
        save_figure(fig, path)


def lr_find(learner, lr_min: float = 1e-7, lr_max: float = 10.0, steps: int = 100, beta: float = 0.98,
            diverge: float = 4.0) -> LRFindResult:
    if not 0 < lr_min < lr_max:
        raise UserError(f"lr-find needs 0 < lr_min < lr_max, got {lr_min}, {lr_max}")
    task = learner.task
    saved = {"modules": {k: copy.deepcopy(m.state_dict()) for k, m in task.modules().items()},
             "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in learner.optimizers.items()},
             "rng": rng_state()}
    learner._set_train(True)
    lrs, smoothed = [], []
    avg, best = 0.0, math.inf
    batches = iter(learner.train_loader)
    try:
        for i in range(steps):
            lr = lr_min * (lr_max / lr_min) ** (i / max(steps - 1, 1))
            for opt in learner.optimizers.values():
                for g in opt.param_groups:
                    g["lr"] = lr
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(learner.train_loader)
                batch = next(batches)
            with learner.autocast():
                loss = task.training_step(learner.to_device(batch), learner)["loss"]
            if not torch.isfinite(loss):
                break
            for opt in learner.optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in learner.optimizers.values():
                opt.step()
            avg = beta * avg + (1 - beta) * float(loss.detach())
            s = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            smoothed.append(s)
            best = min(best, s)
            if s > diverge * best:
                break
    finally:
        for k, m in task.modules().items():
            m.load_state_dict(saved["modules"][k])
        for k, o in learner.optimizers.items():
            o.load_state_dict(saved["optimizers"][k])
        set_rng_state(saved["rng"])
    if len(lrs) < 3:
        raise UserError("the LR sweep diverged immediately; lower lr_min")
    y, x = np.array(smoothed), np.log(lrs)
    stop = int(y.argmin())
    skip = max(3, len(y) // 10)          # the first points are mostly EMA warm-up, not signal
    lo, hi = (skip, stop + 1) if stop + 1 - skip >= 3 else (0, len(y))
    grads = np.gradient(y[lo:hi], x[lo:hi])
    suggestion = float(lrs[lo + int(grads.argmin())])
    return LRFindResult(lrs, smoothed, suggestion, float(lrs[stop]))
