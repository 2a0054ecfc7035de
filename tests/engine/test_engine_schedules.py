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
    for _ in range(24):                   # the peak is step pct_start * total - 1 (torch's OneCycleLR phases)
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


def _torch_one_cycle(opt, cfg, total):
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=cfg.pct_start,
        anneal_strategy="cos", cycle_momentum=True, base_momentum=cfg.min_momentum,
        max_momentum=cfg.max_momentum, div_factor=cfg.div, final_div_factor=cfg.final_div / cfg.div)


def _optimizer(name, params):
    groups = [{"params": [params[0]], "lr": 0.3}, {"params": [params[1]], "lr": 0.02}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](groups, lr=0.1, betas=(0.9, 0.99))


def _momentum(g):
    return g["betas"][0] if "betas" in g else g["momentum"]


@pytest.mark.parametrize("total", [1, 2, 3, 5, 7, 10, 37, 100, 1000])
@pytest.mark.parametrize("pct_start", [0.1, 0.25, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_one_cycle_matches_torch_one_cycle_lr_at_every_step(total, pct_start, opt_name):
    cfg = ScheduleConfig(kind="one-cycle", pct_start=pct_start, div=25.0, final_div=1e4, max_momentum=0.95,
                         min_momentum=0.85)
    ps = [torch.nn.Parameter(torch.zeros(1)) for _ in range(4)]
    o1, o2 = _optimizer(opt_name, ps[:2]), _optimizer(opt_name, ps[2:])
    ours = Schedule(o1, cfg, total_steps=total)
    if float(pct_start * total) - 1 == 0:                   # torch divides 0 by 0 at step 0; we are at the peak
        with pytest.raises(ZeroDivisionError):
            _torch_one_cycle(o2, cfg, total)
        assert [g["lr"] for g in o1.param_groups] == [0.3, 0.02] and _momentum(o1.param_groups[0]) == 0.85
        return
    ref = _torch_one_cycle(o2, cfg, total)
    for step in range(total):
        for g1, g2 in zip(o1.param_groups, o2.param_groups):
            assert math.isclose(g1["lr"], g2["lr"], rel_tol=0, abs_tol=1e-12), (step, g1["lr"], g2["lr"])
            assert math.isclose(_momentum(g1), _momentum(g2), rel_tol=0, abs_tol=1e-12), step
            if "betas" in g1:
                assert g1["betas"][1] == g2["betas"][1] == 0.99
        o2.step()
        ours.step()
        ref.step()
    # after the last step ours stays at the stated final rate (torch's cosine runs on past its end)
    assert [g["lr"] for g in o1.param_groups] == pytest.approx([0.3 / cfg.final_div, 0.02 / cfg.final_div],
                                                               rel=1e-12)


def test_after_the_last_step_torch_turns_back_up_and_ours_stays_final():
    cfg = ScheduleConfig(kind="one-cycle", pct_start=0.25)
    ps = [torch.nn.Parameter(torch.zeros(1)) for _ in range(4)]
    o1, o2 = _optimizer("sgd", ps[:2]), _optimizer("sgd", ps[2:])
    ours, ref = Schedule(o1, cfg, total_steps=7), _torch_one_cycle(o2, cfg, 7)
    for _ in range(7):
        o2.step()
        ours.step()
        ref.step()
    assert ref.get_last_lr()[0] > 100 * 0.3 / cfg.final_div
    assert o1.param_groups[0]["lr"] == pytest.approx(0.3 / cfg.final_div, rel=1e-12)


@pytest.mark.parametrize("total", [7, 10])
def test_one_cycle_short_runs_end_at_the_stated_rate_and_start_at_max_momentum(total):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    cfg = ScheduleConfig(kind="one-cycle", pct_start=0.3)
    s = Schedule(opt, cfg, total_steps=total)
    lrs, moms = [], []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        s.step()
    assert lrs[0] == pytest.approx(1 / cfg.div, rel=1e-12) and moms[0] == cfg.max_momentum
    assert lrs[-1] == pytest.approx(1 / cfg.final_div, rel=1e-12) and moms[-1] == pytest.approx(cfg.max_momentum)
    peak = max(range(total), key=lrs.__getitem__)
    assert moms[peak] == min(moms) and all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))


@pytest.mark.parametrize("kind", ["one-cycle", "cosine", "step"])
def test_resume_mid_run_is_exact(kind):
    cfg = ScheduleConfig(kind=kind, warmup=0.1, pct_start=0.3)
    ps = [torch.nn.Parameter(torch.zeros(1)) for _ in range(4)]
    o1, o2 = _optimizer("adamw", ps[:2]), _optimizer("adamw", ps[2:])
    s1 = Schedule(o1, cfg, total_steps=10)
    for _ in range(4):
        s1.step()
    s2 = Schedule(o2, cfg, total_steps=10)
    s2.load_state_dict(s1.state_dict())
    for _ in range(7):
        assert [(g["lr"], g["betas"]) for g in o1.param_groups] == [(g["lr"], g["betas"]) for g in o2.param_groups]
        s1.step()
        s2.step()


def test_one_cycle_discrete_approaches_the_continuous_curve():
    cfg = ScheduleConfig(kind="one-cycle", pct_start=0.3)
    n = 10_000
    for k in range(0, n, 97):
        assert lr_factor(cfg, k / n, n) == pytest.approx(lr_factor(cfg, k / n), abs=1e-3)
        assert momentum_at(cfg, k / n, n) == pytest.approx(momentum_at(cfg, k / n), abs=1e-4)
    assert momentum_at(cfg, 0.0) == cfg.max_momentum and lr_factor(cfg, 0.0) == pytest.approx(1 / cfg.div)
    assert momentum_at(ScheduleConfig(kind="cosine"), 0.5) is None


def test_other_kinds_ignore_total_steps():
    for kind in ("constant", "step", "cosine"):
        cfg = ScheduleConfig(kind=kind, warmup=0.1)
        for t in (0.0, 0.05, 0.33, 0.5, 0.99, 1.0):
            assert lr_factor(cfg, t, 7) == lr_factor(cfg, t)
