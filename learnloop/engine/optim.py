"""Optimizers by name. Weight decay applies to weight matrices and kernels only (ndim >= 2), never to
biases or normalisation scales, as is standard since Loshchilov & Hutter (2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from learnloop.errors import UserError
from learnloop.utils.params import param

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


@dataclass
class OptimConfig:
    """The `optim` section of every trained part's config (`--set train.optim.lr=3e-3`)."""

    name: str = param("adamw", "optimizer", choices=OPTIMIZERS)
    lr: float = param(1e-3, "peak learning rate", min=0.0)
    weight_decay: float = param(0.0, "decoupled weight decay on weight matrices (L2 for sgd/rmsprop)", min=0.0)
    momentum: float = param(0.9, "SGD momentum (Nesterov when > 0); RMSprop momentum", min=0.0, max=1.0)
    betas: tuple[float, ...] = param((0.9, 0.999), "Adam/AdamW betas (beta1, beta2)", min=0.0, max=1.0, length=2)


def build_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    """The optimizer `cfg` names over `params`: parameters (weight decay on ndim >= 2 only) or a list of
    param-group dicts (e.g. discriminative rates), whose own "lr"/"weight_decay" entries win."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else param_groups(params, cfg.weight_decay)
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=betas)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise UserError(f"unknown optimizer '{cfg.name}'; choose from {', '.join(OPTIMIZERS)}")


def param_groups(params: Iterable[torch.nn.Parameter], weight_decay: float, lr: float | None = None) -> list[dict]:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


# Discriminative learning rates and (gradual) freezing: the fine-tuning recipe of ULMFiT (Howard & Ruder,
# 2018). Layer groups are ordered from the input side, the head last.
def discriminative_param_groups(groups, lr: float, decay: float, weight_decay: float = 0.0) -> list[dict]:
    """Param-group dicts giving layer group l of L the rate eta_l = lr / decay^(L-1-l) (the head, l = L-1,
    gets lr); each group is split as `param_groups` does (weight decay on ndim >= 2 only, frozen parameters
    left out). `groups` is a sequence of iterables of parameters (or modules). Pass the result as the
    optimizer's params."""
    if not (isinstance(decay, (int, float)) and decay > 0):
        raise UserError(f"discriminative decay must be > 0, got {decay}")
    groups = [_parameters(g) for g in groups]
    out: list[dict] = []
    for k, params in enumerate(groups):
        out.extend(param_groups(params, weight_decay, lr / decay ** (len(groups) - 1 - k)))
    return out


def _parameters(params_or_module) -> list[torch.nn.Parameter]:
    if isinstance(params_or_module, torch.nn.Module):
        return list(params_or_module.parameters())
    if isinstance(params_or_module, torch.Tensor):
        return [params_or_module]
    out = []
    for p in params_or_module:
        out.extend(_parameters(p) if isinstance(p, torch.nn.Module) else [p])
    return out


def freeze(params_or_module) -> None:
    """Stop training these parameters (requires_grad = False): a module, a parameter or an iterable of
    either. Optimizers skip parameters without gradients; BatchNorm statistics still update in train mode."""
    for p in _parameters(params_or_module):
        p.requires_grad_(False)


def unfreeze(params_or_module) -> None:
    """Train these parameters again (requires_grad = True)."""
    for p in _parameters(params_or_module):
        p.requires_grad_(True)


from learnloop.engine.callbacks import Callback  # noqa: E402  (kept with the additions below the optimizers)


class GradualUnfreezing(Callback):
    """ULMFiT gradual unfreezing (Howard & Ruder, 2018): in epoch e (0-based) only the last min(e+1, L) of
    the L layer groups `groups_fn()` returns train (e = 0: the head only); the others are frozen. Applied at
    each epoch start from `learner.epoch`, so a resumed run freezes exactly as an uninterrupted one.
    `groups_fn` takes no argument, e.g. `GradualUnfreezing(model.groups)`; groups are ordered from the
    input side, the head last. Build the optimizer over all groups (before this callback freezes any)."""

    def __init__(self, groups_fn):
        if not callable(groups_fn):
            raise UserError("GradualUnfreezing needs a function returning the layer groups, e.g. model.groups")
        self.groups_fn = groups_fn
        self.trainable: int | None = None

    def on_epoch_start(self, learner):
        groups = [_parameters(g) for g in self.groups_fn()]
        self.trainable = min(learner.epoch + 1, len(groups))
        for k, params in enumerate(groups):
            (unfreeze if k >= len(groups) - self.trainable else freeze)(params)
