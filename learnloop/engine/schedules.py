"""Learning-rate schedules as pure functions of training progress, applied per optimizer step.

With t = step / total_steps in [0, 1] and base rate eta:
- constant:   eta
- step:       eta * gamma ** floor(t / step_every)                  (decay every `step_every` of training)
- cosine:     eta * (min_ratio + (1 - min_ratio) * (1 + cos(pi * u)) / 2), after a linear warmup,
              u = (t - warmup) / (1 - warmup)                        (Loshchilov & Hutter, 2017)
- one-cycle:  lr rises (cosine) from eta/div to eta over `pct_start`, then anneals (cosine) to eta/final_div,
              while momentum (SGD momentum or Adam beta1) moves the opposite way between
              max_momentum and min_momentum (Smith, 2018; "super-convergence"). Per step it follows
              torch's OneCycleLR with final_div_factor = final_div / div (see `Schedule`).
The state is just the step counter, so resuming is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learnloop.utils.params import param

KINDS = ("constant", "step", "cosine", "one-cycle")


@dataclass
class ScheduleConfig:
    """The `schedule` section of a trained part's config (`--set train.schedule.kind=cosine`)."""

    kind: str = param("constant", "learning-rate schedule", choices=KINDS)
    warmup: float = param(0.0, "cosine: linear warm-up as a fraction of training", min=0.0, max=0.99)
    min_ratio: float = param(0.0, "cosine: floor as a fraction of the base rate", min=0.0, max=1.0)
    gamma: float = param(0.1, "step: decay factor", min=0.0, max=1.0)
    step_every: float = param(0.33, "step: decay every this fraction of training", min=0.01, max=1.0)
    pct_start: float = param(0.25, "one-cycle: fraction of training spent rising", min=0.01, max=0.99)
    div: float = param(25.0, "one-cycle: start at lr / div", min=1.0)
    final_div: float = param(1e4, "one-cycle: end at lr / final_div", min=1.0)
    max_momentum: float = param(0.95, "one-cycle: momentum (or Adam beta1) at the lowest rate", min=0.0, max=1.0)
    min_momentum: float = param(0.85, "one-cycle: momentum at the peak rate", min=0.0, max=1.0)


def _anneal_cos(start: float, end: float, pct: float) -> float:
    """Cosine from `start` (pct 0) to `end` (pct 1), written as torch's OneCycleLR writes it."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _one_cycle(cfg: ScheduleConfig, t: float, total_steps: int | None) -> tuple[float, float]:
    """(lr factor, momentum) of one-cycle. Phase 1 runs from position 0 to e_1, phase 2 from e_1 to e_2; at
    position x in phase [a, b], pct = (x - a) / (b - a). With `total_steps` = n these are torch's discrete
    phase ends, x = step = t * n, e_1 = pct_start * n - 1, e_2 = n - 1 (so the last optimizer step, n - 1,
    runs at the final rate); without, the continuous limit n -> infinity: x = t, e_1 = pct_start, e_2 = 1."""
    if total_steps is None:
        x, e1, e2 = min(max(t, 0.0), 1.0), cfg.pct_start, 1.0
    else:
        n = max(int(total_steps), 1)
        x, e1, e2 = min(max(t * n, 0.0), n - 1.0), float(cfg.pct_start * n) - 1, n - 1.0
    lo, end = 1 / cfg.div, 1 / cfg.final_div
    if x <= e1:                                  # rising rate, falling momentum
        pct = x / e1 if e1 > 0 else 1.0          # e_1 = 0: torch divides 0 by 0 here; the phase is over
        return _anneal_cos(lo, 1.0, pct), _anneal_cos(cfg.max_momentum, cfg.min_momentum, pct)
    pct = (x - e1) / (e2 - e1) if e2 > e1 else 1.0
    return _anneal_cos(1.0, end, pct), _anneal_cos(cfg.min_momentum, cfg.max_momentum, pct)


def lr_factor(cfg: ScheduleConfig, t: float, total_steps: int | None = None) -> float:
    """The factor on the base rate at progress t = step / total_steps (clamped to [0, 1]). `total_steps` only
    matters for one-cycle: given, it follows torch's OneCycleLR step for step (see `Schedule`); omitted, the
    continuous curve (phase 1 on [0, pct_start], phase 2 on [pct_start, 1])."""
    if cfg.kind == "one-cycle":
        return _one_cycle(cfg, t, total_steps)[0]
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
    raise ValueError(f"unknown schedule '{cfg.kind}'; choose from {', '.join(KINDS)}")


def momentum_at(cfg: ScheduleConfig, t: float, total_steps: int | None = None) -> float | None:
    """One-cycle's momentum (None for other kinds), annealed by cosine in the same phases as the rate:
    max_momentum -> min_momentum while the rate rises, min_momentum -> max_momentum while it falls."""
    if cfg.kind != "one-cycle":
        return None
    return _one_cycle(cfg, t, total_steps)[1]


class Schedule:
    """Sets every param group's lr (and momentum for one-cycle) from the step counter t: before optimizer
    step t (t = 0 .. total_steps - 1) the rate is base * lr_factor(cfg, t / total_steps, total_steps), base
    being the group's lr when the schedule was built (kept as `initial_lr`).

    One-cycle equals `torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=base, total_steps=total_steps,
    pct_start=pct_start, div_factor=div, final_div_factor=final_div / div, anneal_strategy="cos",
    cycle_momentum=True, base_momentum=min_momentum, max_momentum=max_momentum, three_phase=False)` at every
    step, for SGD momentum and Adam's beta1. Note the final rate: ours is base / final_div (as stated in
    ScheduleConfig), torch's is base / (div_factor * final_div_factor), hence final_div_factor = final_div /
    div. Deliberate differences: where pct_start * total_steps == 1 torch divides by zero (ZeroDivisionError)
    and we start at the peak rate; after the last step (t = total_steps) torch extrapolates the cosine past
    its end (the rate rises again) and we stay at the final rate."""

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
        f, mom = lr_factor(self.cfg, progress, self.total), momentum_at(self.cfg, progress, self.total)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
            if mom is not None:
                if "betas" in g:
                    g["betas"] = (mom, *g["betas"][1:])
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
