"""Exponential moving average of a module's weights (Polyak averaging) as a callback any task can use.

Polyak & Juditsky (1992) average the iterates of stochastic gradient descent; deep learning uses the
exponential form (e.g. the mean teacher of Tarvainen & Valpola, 2017; the EMA generator of Karras et al.,
2018 and Yazici et al., 2019). After every `every`-th step of the named optimizer (of any optimizer when
`optimizer` is None), with t = number of EMA updates including this one:

    theta_ema <- beta_t * theta_ema + (1 - beta_t) * theta
    beta_t = beta                                   (warmup=False)
    beta_t = min(beta, (1 + t) / (10 + t))          (warmup=True: early weights are forgotten quickly)

theta_ema starts as a copy of theta when training starts. Buffers (BatchNorm running statistics,
spectral-norm vectors) are copied from the live module at each update, not averaged.

Use (e.g. a GAN generator trained by the optimizer named "g"):

    ema = EMA("g", decay=0.999, optimizer="g", warmup=True)
    learner = Learner(task, train, callbacks=[ema], ...)      # or ctx.learner(..., callbacks=[ema])
    learner.fit()
    ema.module(z)                    # the averaged copy: an nn.Module in eval mode, never trained
    with ema.swapped():              # or: the EMA weights inside the task's own module, restored on exit
        metrics = learner.validate(test_loader, "test")

A task can keep a reference to its EMA callback (e.g. to sample from `ema.module` in `on_epoch_end`); the
callback must be in `learner.callbacks` to be updated and checkpointed. The shadow weights are the
callback's state (`state_dict()["shadow"]`, a module state dict), stored in every checkpoint under
`callbacks/<ema.name>`; `ema_weights(path_or_state, module)` reads them back without a Learner, e.g.
`generator.load_state_dict(ema_weights(run.checkpoints / "last.safetensors", "g"))`. `ReloadBest` restores
them together with the modules. `validate_with_ema=True` swaps the EMA weights in for every validation.
"""

from __future__ import annotations

import contextlib
import copy
import os

import torch

from learnloop.engine.callbacks import Callback
from learnloop.errors import UserError


class EMA(Callback):
    """EMA of task module `module`'s weights, updated after every `every`-th step of optimizer `optimizer`
    (None: after every step of any optimizer, so name it when the task has several). `decay` is beta in
    [0, 1); `warmup` uses beta_t (module docstring); `validate_with_ema` validates with the EMA weights;
    `name` (default "ema_<module>") keys the state in checkpoints, so two EMAs of one module need two names.
    `module` is the averaged copy, `swapped()` puts it into the live module, `updates` counts updates."""

    holds_weights = True

    def __init__(self, module: str = "model", decay: float = 0.999, every: int = 1, optimizer: str | None = None,
                 *, warmup: bool = False, validate_with_ema: bool = False, name: str | None = None):
        if not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise UserError(f"EMA decay must be in [0, 1), got {decay}")
        if not isinstance(every, int) or every < 1:
            raise UserError(f"EMA every must be an integer >= 1, got {every}")
        self.module_name, self.decay, self.every, self.optimizer = module, float(decay), every, optimizer
        self.warmup, self.validate_with_ema = warmup, validate_with_ema
        self._name = name or f"ema_{module}"
        self.updates, self._seen = 0, 0
        self._live: torch.nn.Module | None = None
        self._shadow: torch.nn.Module | None = None
        self._pending: dict | None = None
        self._params: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._swapped = self._swapped_for_validation = False

    @property
    def name(self) -> str:
        return self._name

    # attaching ------------------------------------------------------------------------------------------
    def attach(self, learner) -> "EMA":
        """Bind to the learner's task module (done at fit start; call it to use `module` before fitting).
        The shadow starts as a copy of the live weights, or as the state loaded from a checkpoint."""
        mods = learner.task.modules()
        if self.module_name not in mods:
            raise UserError(f"EMA: the task has no module '{self.module_name}'; it has {', '.join(mods)}")
        if self.optimizer is not None and self.optimizer not in learner.optimizers:
            raise UserError(f"EMA: no optimizer '{self.optimizer}'; the task has {', '.join(learner.optimizers)}")
        live = mods[self.module_name]
        if self._shadow is None or self._live is not live:
            self._live = live
            self._shadow = copy.deepcopy(live)
            for p in self._shadow.parameters():
                p.grad = None
            self._shadow.requires_grad_(False)
            self._shadow.eval()
            live_p, live_b = dict(live.named_parameters()), dict(live.named_buffers())
            self._params = [(s, live_p[k]) for k, s in self._shadow.named_parameters()]
            self._buffers = [(s, live_b[k]) for k, s in self._shadow.named_buffers()]
        if self._pending is not None:
            self._load(self._pending)
            self._pending = None
        return self

    @property
    def module(self) -> torch.nn.Module:
        """The averaged copy of the module (eval mode, no gradients). Do not train it."""
        self._require_attached()
        return self._shadow

    def _require_attached(self) -> None:
        if self._shadow is None:
            raise UserError(f"EMA '{self.name}' is not attached yet: it attaches at fit start (or call attach)")

    # updating -------------------------------------------------------------------------------------------
    def on_fit_start(self, learner):
        self.attach(learner)

    def on_after_optimizer_step(self, learner, name):
        if self.optimizer is not None and name != self.optimizer:
            return
        self._seen += 1
        if self._seen % self.every == 0:
            if self._shadow is None:
                self.attach(learner)
            self.update()

    @torch.no_grad()
    def update(self) -> None:
        """One EMA update from the live weights (the callback calls this itself after optimizer steps)."""
        self._require_attached()
        self.updates += 1
        t = self.updates
        beta = min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay
        if self._params:
            torch._foreach_lerp_([s for s, _ in self._params], [p.detach() for _, p in self._params], 1.0 - beta)
        for s, b in self._buffers:
            s.copy_(b)

    # evaluating with the averaged weights -------------------------------------------------------------
    @torch.no_grad()
    def _swap(self) -> None:
        for s, p in self._params + self._buffers:
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)
        self._swapped = not self._swapped

    @contextlib.contextmanager
    def swapped(self):
        """Inside the block the task's live module holds the EMA weights (and the shadow the live ones);
        they are swapped back on exit, also on an exception."""
        self._require_attached()
        self._swap()
        try:
            yield self._live
        finally:
            self._swap()

    def on_before_validation(self, learner, stage):
        if self.validate_with_ema and self._shadow is not None and not self._swapped:
            self._swap()
            self._swapped_for_validation = True

    def on_after_validation(self, learner, stage, metrics):
        if self._swapped_for_validation:
            self._swap()
            self._swapped_for_validation = False

    # checkpoint state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self._shadow is None:
            return dict(self._pending) if self._pending is not None else {}
        if self._swapped:
            raise RuntimeError("EMA state requested while the EMA weights are swapped in")
        return {"shadow": self._shadow.state_dict(), "updates": self.updates, "seen": self._seen}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if self._shadow is None:
            self._pending = state
            self.updates, self._seen = int(state["updates"]), int(state["seen"])
        else:
            self._load(state)

    def _load(self, state: dict) -> None:
        self._shadow.load_state_dict(state["shadow"])
        self.updates, self._seen = int(state["updates"]), int(state["seen"])


def ema_weights(state, module: str = "model", name: str | None = None) -> dict[str, torch.Tensor]:
    """The EMA shadow weights of task module `module` (a state dict to `load_state_dict` into a fresh
    model) from a checkpoint: a path to a `.safetensors` checkpoint or the state tree `load_state` read.
    `name` is the EMA callback's name if it was not the default `ema_<module>`."""
    where = ""
    if isinstance(state, (str, os.PathLike)):
        from learnloop.engine.checkpoint import load_state

        where = f"{state}: "
        state = load_state(state)
    key = name or f"ema_{module}"
    saved = state.get("callbacks", {}) if isinstance(state, dict) else {}
    entry = saved.get(key)
    if not isinstance(entry, dict) or "shadow" not in entry:
        have = [k for k, v in saved.items() if isinstance(v, dict) and "shadow" in v]
        raise UserError(f"{where}checkpoint has no EMA weights '{key}' for module '{module}'"
                        f"{'; it has ' + ', '.join(have) if have else ''}")
    return entry["shadow"]
