"""Optimizers by name. Weight decay applies to weight matrices and kernels only (ndim >= 2), never to
biases or normalisation scales, as is standard since Loshchilov & Hutter (2019)."""

from __future__ import annotations

from typing import Iterable

import torch

from learnloop.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")


def param_groups(params: Iterable[torch.nn.Parameter], weight_decay: float, lr: float | None = None) -> list[dict]:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if lr is not None:
        for g in groups:
            g["lr"] = lr
    return [g for g in groups if g["params"]]


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """`params` is an iterable of parameters or a list of param-group dicts (e.g. discriminative rates)."""
    params = list(params)
    groups = params if params and isinstance(params[0], dict) else param_groups(params, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    raise UserError(f"unknown optimizer '{name}'; choose from {', '.join(OPTIMIZERS)}")
