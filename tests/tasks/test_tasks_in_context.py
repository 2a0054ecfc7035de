"""InContextRegression: the normalised squared error per prompt position, accumulated over ragged batches,
and the optimizer its `OptimConfig` names."""

import pytest
import torch

from learnloop.data.loader import TensorLoader
from learnloop.engine.learner import Learner
from learnloop.engine.optim import OptimConfig
from learnloop.models.transformer import InContextRegressor
from learnloop.tasks.in_context import InContextRegression, linear_regression_prompts


def _task(optim=None, d=3, n=6):
    torch.manual_seed(0)
    return InContextRegression(InContextRegressor(d, n, d_model=16, nhead=2, num_layers=1), optim)


def test_err_k_over_ragged_batches_is_the_per_position_mean():
    xs, ys = linear_regression_prompts(7, 6, 3, torch.Generator().manual_seed(4))
    task = _task()
    metrics = Learner(task).validate(TensorLoader((xs, ys), 3), "val")        # batches of 3, 3, 1
    with torch.no_grad():
        sq = (task.model.eval()(xs, ys) - ys).square() / 3                    # (B, n), normalised by d
    for k in range(6):
        assert metrics[f"val_err_{k}"] == pytest.approx(float(sq[:, k].mean()), rel=1e-5)
    assert metrics["val_loss"] == pytest.approx(float(sq.mean()), rel=1e-5)


def test_predicting_zero_scores_one_in_expectation():
    """L = (1/(n d)) sum (yhat - f(x))^2 with yhat = 0 is E[(w.x)^2] / d = 1 for w, x ~ N(0, I)."""

    class Zero(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, xs, ys):
            return torch.zeros_like(ys) + 0 * self.p

    xs, ys = linear_regression_prompts(4000, 4, 5, torch.Generator().manual_seed(0))
    loss = InContextRegression(Zero()).training_step((xs, ys), None)["loss"]
    assert float(loss.detach()) == pytest.approx(1.0, abs=0.05)


def test_optimizer_is_the_one_optim_names():
    task = _task(OptimConfig(name="adamw", lr=5e-4, weight_decay=0.05))
    opt = task.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW) and {g["lr"] for g in opt.param_groups} == {5e-4}
    assert {g["weight_decay"] for g in opt.param_groups} == {0.05, 0.0}
    assert isinstance(_task(OptimConfig(name="rmsprop", lr=1e-3)).configure_optimizers(), torch.optim.RMSprop)
    default = _task().configure_optimizers()
    assert isinstance(default, torch.optim.AdamW) and default.param_groups[0]["lr"] == 1e-3
