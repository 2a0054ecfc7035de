"""Learning-rate schedules as pure functions of training progress, applied per optimizer step.

With t = step / total_steps in [0, 1] and base rate eta:
- constant:   eta
- step:       eta * gamma ** floor(t / step_every)                  (decay every `step_every` of training)
- cosine:     eta * (min_ratio + (1 - min_ratio) * (1 + cos(pi * u)) / 2), after a linear warmup,
              u = (t - warmup) / (1 - warmup)                        (Loshchilov & Hutter, 2017)
- one-cycle:  lr rises from eta/div to eta over `pct_start`, then anneals (cosine) to eta/final_div,
              while momentum (SGD momentum or Adam beta1) moves the opposite way between
              max_momentum and min_momentum (Smith, 2018; "super-convergence").
The state is just the step counter, so resuming is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ScheduleConfig:
    kind: str = "constant"          # constant | step | cosine | one-cycle
    warmup: float = 0.0             # fraction of training (cosine)
    min_ratio: float = 0.0          # cosine floor as a fraction of the base rate
    gamma: float = 0.1              # step decay factor
    step_every: float = 0.33        # step: decay every this fraction of training
    pct_start: float = 0.25         # one-cycle: fraction spent rising
    div: float = 25.0               # one-cycle: start at lr / div
    final_div: float = 1e4          # one-cycle: end at lr / final_div
    max_momentum: float = 0.95
    min_momentum: float = 0.85

KINDS = ("constant", "step", "cosine", "one-cycle")


def lr_factor(cfg: ScheduleConfig, t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    if cfg.kind == "constant":
        return 1.0
    if cfg.kind == "step":
        return cfg.gamma ** math.floor(t / cfg.step_every + 1e-9)
    if cfg.kind == "cosine":
        if t < cfg.warmup:
            return t / cfg.warmup
        u = (t - cfg.warmup) / max(1 - cfg.warmup, 1e-12)
        return cfg.min_ratio + (1 - cfg.min_ratio) * (1 + math.cos(math.pi * u)) / 2
    if cfg.kind == "one-cycle":
        lo, end = 1 / cfg.div, 1 / cfg.final_div
        if t < cfg.pct_start:
            u = t / cfg.pct_start
            return lo + (1 - lo) * (1 - math.cos(math.pi * u)) / 2
        u = (t - cfg.pct_start) / max(1 - cfg.pct_start, 1e-12)
        return end + (1 - end) * (1 + math.cos(math.pi * u)) / 2
    raise ValueError(f"unknown schedule '{cfg.kind}'; choose from {', '.join(KINDS)}")


def momentum_at(cfg: ScheduleConfig, t: float) -> float | None:
    """One-cycle's momentum: high when the rate is low and low when it peaks; None for other kinds."""
    if cfg.kind != "one-cycle":
        return None
    f = (lr_factor(cfg, t) - 1 / cfg.final_div) / (1 - 1 / cfg.final_div)
    return cfg.max_momentum - (cfg.max_momentum - cfg.min_momentum) * min(max(f, 0.0), 1.0)


class Schedule:
    """Sets every param group's lr (and momentum for one-cycle) from the step counter."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int):
        if cfg.kind not in KINDS:
            raise ValueError(f"unknown schedule '{cfg.kind}'; choose from {', '.join(KINDS)}")
        self.optimizer, self.cfg, self.total = optimizer, cfg, max(int(total_steps), 1)
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.t = 0
        self.apply()

    def apply(self) -> None:
        progress = self.t / self.total
        f, mom = lr_factor(self.cfg, progress), momentum_at(self.cfg, progress)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
            if mom is not None:
                if "betas" in g:
                    g["betas"] = (mom, g["betas"][1])
                elif "momentum" in g:
                    g["momentum"] = mom

    def step(self) -> None:
        self.t += 1
        self.apply()

    def state_dict(self) -> dict:
        return {"t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.apply()
