"""EMA callback: torch.optim.swa_utils.AveragedModel as the reference, the warm-up schedule, buffers,
optimizer filters, swapping weights in, checkpoints and exact resume."""

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from learnloop.data import TensorLoader
from learnloop.engine import Callback, Learner, RunFolder
from learnloop.engine.callbacks import ReloadBest
from learnloop.engine.checkpoint import load_state
from learnloop.engine.ema import EMA, ema_weights
from learnloop.errors import UserError
from learnloop.utils.seed import seed_everything

from helpers import Regression, TwoPlayer, regression_data


def _data(n=24, shuffle=True):
    x, y = regression_data(n, dtype=torch.float64)
    return TensorLoader((x, y), 4, shuffle=shuffle, seed=1), TensorLoader((x, y), 8)


class Reference(Callback):
    """AveragedModel EMA updated after every step (its first update copies, so seed it before training)."""

    def __init__(self, model, decay):
        self.avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.avg.update_parameters(model)
        self.model = model

    def on_after_optimizer_step(self, learner, name):
        self.avg.update_parameters(self.model)


def test_matches_averaged_model_and_copies_buffers():
    task = Regression(dtype=torch.float64)
    ema, ref = EMA("model", decay=0.9), Reference(task.model, 0.9)
    train, _ = _data()
    Learner(task, train, epochs=3, callbacks=[ema, ref]).fit()
    assert ema.updates == 3 * 6
    for (k, a), b in zip(ema.module.named_parameters(), ref.avg.module.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15, msg=k)
    for (k, b), live in zip(ema.module.named_buffers(), task.model.buffers()):
        assert torch.equal(b, live), k                                     # BatchNorm statistics: copied
    assert not all(torch.equal(a, p) for a, p in zip(ema.module.parameters(), task.model.parameters()))
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())


def test_warmup_schedule_by_hand():
    """beta_t = min(beta, (1 + t) / (10 + t)), t counting updates from 1 (as the GAN task's EMA)."""
    task = Regression(dtype=torch.float64, batchnorm=False)
    expected = [p.detach().clone() for p in task.model.parameters()]
    t = 0

    class ByHand(Callback):
        def on_after_optimizer_step(self, learner, name):
            nonlocal t
            t += 1
            beta = min(0.99, (1 + t) / (10 + t))
            for e, p in zip(expected, task.model.parameters()):
                e.mul_(beta).add_(p.detach(), alpha=1 - beta)

    ema = EMA("model", decay=0.99, warmup=True)
    train, _ = _data()
    Learner(task, train, epochs=2, callbacks=[ema, ByHand()]).fit()
    for a, b in zip(ema.module.parameters(), expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_every_and_optimizer_filter():
    x, y = regression_data(16)
    loader = TensorLoader((x, y), 4)
    only_b, every_2, any_opt = EMA("b", 0.5, optimizer="b"), EMA("a", 0.5, every=2, optimizer="a"), \
        EMA("a", 0.5, name="ema_any")
    task = TwoPlayer()
    Learner(task, loader, epochs=1, callbacks=[only_b, every_2, any_opt]).fit()
    assert (only_b.updates, every_2.updates, any_opt.updates) == (4, 2, 8)


def test_swapped_restores_the_live_weights_also_on_errors():
    task = Regression(dtype=torch.float64)
    ema = EMA("model", 0.9)
    train, val = _data()
    learner = Learner(task, train, val, epochs=2, callbacks=[ema])
    learner.fit()
    live = {k: v.clone() for k, v in task.model.state_dict().items()}
    shadow = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with ema.swapped() as module:
        assert module is task.model
        assert all(torch.equal(task.model.state_dict()[k], shadow[k]) for k in shadow)
        swapped_loss = learner.validate(val)["val_loss"]
    assert all(torch.equal(task.model.state_dict()[k], live[k]) for k in live)
    with pytest.raises(RuntimeError, match="boom"), ema.swapped():
        raise RuntimeError("boom")
    assert all(torch.equal(task.model.state_dict()[k], live[k]) for k in live)
    assert all(torch.equal(ema.module.state_dict()[k], shadow[k]) for k in shadow)
    assert swapped_loss != learner.validate(val)["val_loss"]


def test_validate_with_ema_reports_the_average_and_leaves_training_alone():
    histories, weights = [], []
    for ema in (EMA("model", 0.8), EMA("model", 0.8, validate_with_ema=True)):
        task = Regression(dtype=torch.float64)
        train, val = _data()
        learner = Learner(task, train, val, epochs=2, callbacks=[ema])
        histories.append(learner.fit())
        weights.append(task.model.state_dict())
        with ema.swapped():
            histories[-1].append(learner.validate(val))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert histories[1][-2]["val_loss"] == histories[0][-1]["val_loss"]        # validation saw the EMA
    assert histories[1][-2]["val_loss"] != histories[0][-2]["val_loss"]


def _run(tmp_path, epochs, total, sub, resume_from=None):
    seed_everything(0)
    task = Regression(dtype=torch.float64)
    ema = EMA("model", 0.9, warmup=True)
    train, val = _data()
    run = RunFolder.create(tmp_path, sub, {}) if resume_from is None else RunFolder.open(resume_from)
    learner = Learner(task, train, val, epochs=total, run=run, callbacks=[ema])
    if resume_from is not None:
        assert learner.try_resume()
    learner.epochs = epochs
    learner.fit()
    return learner, ema, run


def test_resume_is_exact_and_the_checkpoint_holds_the_shadow(tmp_path):
    full, ema_full, _ = _run(tmp_path, 3, 3, "full")
    _, _, run = _run(tmp_path, 1, 3, "half")
    resumed, ema_res, _ = _run(tmp_path, 3, 3, "half", resume_from=run.path)
    assert ema_res.updates == ema_full.updates == 18
    a, b = ema_full.module.state_dict(), ema_res.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = ema_weights(resumed.checkpoint_path("last"), "model")
    assert all(torch.equal(saved[k], b[k]) for k in b)
    state = load_state(resumed.checkpoint_path("last"))
    assert set(ema_weights(state, "model")) == set(resumed.task.model.state_dict())


def test_ema_weights_errors(tmp_path):
    _, _, run = _run(tmp_path, 1, 1, "x")
    with pytest.raises(UserError, match="no EMA weights 'ema_g' for module 'g'; it has ema_model"):
        ema_weights(run.checkpoints / "last.safetensors", "g")
    with pytest.raises(UserError, match="no EMA weights"):
        ema_weights({"callbacks": {}}, "model")


def test_reload_best_restores_the_ema_of_the_best_epoch(tmp_path):
    class Script(Callback):
        def __init__(self):
            self.shadows = []

        def on_after_validation(self, learner, stage, metrics):
            metrics["val_loss"] = [2.0, 1.0, 3.0][learner.epoch]

        def on_epoch_end(self, learner, metrics):
            self.shadows.append({k: v.clone() for k, v in ema.module.state_dict().items()})

    ema, script = EMA("model", 0.5), Script()
    train, val = _data()
    Learner(Regression(dtype=torch.float64), train, val, epochs=3, run=RunFolder.create(tmp_path, "b", {}),
            callbacks=[ema, script, ReloadBest()]).fit()
    now = ema.module.state_dict()
    assert all(torch.equal(now[k], script.shadows[1][k]) for k in now)
    assert ema.updates == 12


def test_bad_settings():
    with pytest.raises(UserError, match="decay"):
        EMA("model", decay=1.0)
    with pytest.raises(UserError, match="every"):
        EMA("model", every=0)
    with pytest.raises(UserError, match="not attached"):
        _ = EMA("model").module
    train, _ = _data()
    with pytest.raises(UserError, match="no module 'g'"):
        Learner(Regression(), train, callbacks=[EMA("g")]).fit()
    with pytest.raises(UserError, match="no optimizer 'd'"):
        Learner(Regression(), train, callbacks=[EMA("model", optimizer="d")]).fit()


def test_attach_before_fit_gives_the_initial_weights():
    task = Regression()
    learner = Learner(task, None)
    ema = EMA("model").attach(learner)
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), task.model.parameters()))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(ema.module.parameters(), task.model.parameters()))
