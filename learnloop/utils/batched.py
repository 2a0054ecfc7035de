"""Run a module's function over a tensor in chunks, in eval mode, without gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def eval_in_batches(module: nn.Module, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor],
                    batch_size: int) -> list[torch.Tensor]:
    """[fn(x[i:i + batch_size]) for each chunk] with `module` in eval mode; its train/eval mode is restored
    afterwards, also when `fn` raises. An empty `x` gives an empty list."""
    was_training = module.training
    module.eval()
    try:
        return [fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        module.train(was_training)
