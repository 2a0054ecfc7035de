import math

import pytest
import torch

from learnloop.engine.schedules import Schedule, ScheduleConfig, lr_factor, momentum_at


def test_cosine_with_warmup():
    cfg = ScheduleConfig(kind="cosine", warmup=0.1)
    assert lr_factor(cfg, 0.0) == 0.0 and lr_factor(cfg, 0.05) == pytest.approx(0.5)
    assert lr_factor(cfg, 0.1) == pytest.approx(1.0) and lr_factor(cfg, 1.0) == pytest.approx(0.0)
    assert lr_factor(cfg, 0.55) == pytest.approx(0.5)


def test_step_decay():
    cfg = ScheduleConfig(kind="step", gamma=0.5, step_every=0.25)
    assert [lr_factor(cfg, t) for t in (0.0, 0.24, 0.25, 0.5, 0.99)] == [1, 1, 0.5, 0.25, 0.125]


def test_one_cycle_lr_and_momentum_move_oppositely():
    cfg = ScheduleConfig(kind="one-cycle", pct_start=0.3, div=25, final_div=1e4)
    assert lr_factor(cfg, 0) == pytest.approx(1 / 25) and lr_factor(cfg, 0.3) == pytest.approx(1.0)
    assert lr_factor(cfg, 1) == pytest.approx(1e-4)
    assert momentum_at(cfg, 0.3) == pytest.approx(cfg.min_momentum)
    assert momentum_at(cfg, 1.0) == pytest.approx(cfg.max_momentum, abs=1e-3)


def test_schedule_sets_lr_and_beta1_and_resumes():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=0.1)
    s = Schedule(opt, ScheduleConfig(kind="one-cycle"), total_steps=100)
    for _ in range(25):
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and opt.param_groups[0]["betas"][0] == pytest.approx(0.85)
    opt2 = torch.optim.AdamW([p], lr=0.1)
    s2 = Schedule(opt2, ScheduleConfig(kind="one-cycle"), total_steps=100)
    s2.load_state_dict(s.state_dict())
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_matches_torch_cosine_annealing():
    p = torch.nn.Parameter(torch.zeros(1))
    o1, o2 = torch.optim.SGD([p], lr=1.0), torch.optim.SGD([p], lr=1.0)
    ours = Schedule(o1, ScheduleConfig(kind="cosine"), total_steps=20)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(o2, T_max=20)
    for _ in range(20):
        ours.step()
        o2.step()
        ref.step()
        assert math.isclose(o1.param_groups[0]["lr"], o2.param_groups[0]["lr"], abs_tol=1e-12)


def test_unknown_kind():
    with pytest.raises(ValueError, match="choose from"):
        Schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), ScheduleConfig(kind="bogus"), 10)
