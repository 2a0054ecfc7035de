import math

import pytest
import torch

from learnloop.engine import EarlyStopping, GradNormStats, Learner, RunFolder, ScheduleConfig
from learnloop.engine.checkpoint import load_state
from learnloop.errors import TrainingDiverged, UserError
from learnloop.utils.seed import seed_everything

from helpers import NaNAfter, loaders, mlp_task


def _run(tmp_path, epochs, sub="run", resume_from=None, total=None):
    seed_everything(0)
    task = mlp_task()
    train, val = loaders()
    run = RunFolder.create(tmp_path, sub, {}) if resume_from is None else RunFolder.open(resume_from)
    learner = Learner(task, train, val, epochs=total or epochs, run=run,
                      schedule=ScheduleConfig(kind="one-cycle"))
    if resume_from is not None:
        assert learner.try_resume()
    else:
        learner.epochs = epochs
    learner.fit()
    return learner, run


def _weights(learner):
    return {k: v.clone() for k, v in learner.task.model.state_dict().items()}


def test_it_learns(tmp_path):
    learner, _ = _run(tmp_path, 5)
    assert learner.history[-1]["val_accuracy"] > 0.95
    assert learner.history[-1]["train_loss"] < learner.history[0]["train_loss"]


def test_rerun_with_same_seed_is_identical(tmp_path):
    a, _ = _run(tmp_path, 2, "a")
    b, _ = _run(tmp_path, 2, "b")
    strip = [{k: v for k, v in h.items() if k != "time"} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != "time"} for h in b.history]


def test_resume_is_exact(tmp_path):
    """2 epochs straight == 1 epoch, stop, resume for 1 more (dropout + shuffling + one-cycle schedule)."""
    full, _ = _run(tmp_path, 2, "full")
    seed_everything(0)
    half, run = _run(tmp_path, 1, "half", total=2)
    # simulate a fresh process: new task and learner, resume from the folder
    seed_everything(123)
    resumed, _ = _run(tmp_path, 2, resume_from=run.path, total=2)
    wa, wb = _weights(full), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed.step == full.step and resumed.epoch == 2
    rows = [r for r in RunFolder.open(run.path).history() if "time" in r]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_resume_drops_metric_lines_logged_after_the_checkpoint(tmp_path):
    _, run = _run(tmp_path, 1, "x", total=2)
    run.append_metrics({"epoch": 2, "step": 999, "time": 0.0, "train_loss": 0.0})   # a crash after logging
    _run(tmp_path, 2, resume_from=run.path, total=2)
    rows = [r for r in run.history() if "time" in r]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] != 999


def test_gradient_accumulation_equals_big_batch():
    x = torch.randn(64, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    from learnloop.data import TensorLoader

    results = []
    for bs, k in ((32, 1), (8, 4)):
        torch.manual_seed(0)
        task = mlp_task(dropout=0.0, optimizer="sgd", lr=0.1)
        task.model.double()
        learner = Learner(task, TensorLoader((x, y), bs), epochs=1, accumulate=k)
        learner.fit()
        assert learner.step == 2
        results.append(_weights(learner))
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-10, atol=1e-12)


def test_partial_last_group_is_scaled_by_its_size():
    """Loss of a 3-micro-batch remainder group is averaged over 3, not k=4."""
    x, y = torch.randn(56, 8, dtype=torch.float64), torch.randint(0, 3, (56,))
    from learnloop.data import TensorLoader

    torch.manual_seed(0)
    task = mlp_task(dropout=0.0, optimizer="sgd", lr=0.1)
    task.model.double()
    ref = Learner(task, TensorLoader((x[32:], y[32:]), 24), epochs=1)
    w0 = _weights(ref)
    ref.fit()
    torch.manual_seed(0)
    task2 = mlp_task(dropout=0.0, optimizer="sgd", lr=0.1)
    task2.model.double()
    task2.model.load_state_dict(w0)
    acc = Learner(task2, TensorLoader((x[32:], y[32:]), 8), epochs=1, accumulate=4)
    acc.fit()
    for k, v in _weights(ref).items():
        torch.testing.assert_close(v, _weights(acc)[k], rtol=1e-10, atol=1e-12)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    x, y = torch.randn(40, 4), torch.randn(40)
    from learnloop.data import TensorLoader

    run = RunFolder.create(tmp_path, "nan", {})
    task = NaNAfter(bad_step=7)          # 4 batches per epoch: epoch 1 fine, dies in epoch 2
    learner = Learner(task, TensorLoader((x, y), 10), epochs=5, run=run, monitor=None)
    before = None
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2.*last good checkpoint"):
        learner.fit()
    state = load_state(learner.checkpoint_path("last"))
    assert state["epoch"] == 1
    before = state["modules"]["model"]["weight"]
    assert torch.isfinite(before).all()


def test_gradient_clipping_bounds_the_update():
    x, y = torch.randn(16, 8) * 1000, torch.randint(0, 3, (16,))
    from learnloop.data import TensorLoader

    task = mlp_task(dropout=0.0, optimizer="sgd", lr=1.0)
    task.optim.momentum = 0.0          # plain SGD: one step moves the weights by lr * clipped grad
    w0 = _weights(type("L", (), {"task": task})())
    learner = Learner(task, TensorLoader((x, y), 16), epochs=1, clip_grad_norm=0.5)
    learner.fit()
    w1 = _weights(learner)
    delta = torch.sqrt(sum(((w1[k] - w0[k]) ** 2).sum() for k in w0))
    assert delta <= 0.5 + 1e-5


def test_early_stopping_and_best_checkpoint(tmp_path):
    task = mlp_task()
    train, val = loaders()
    run = RunFolder.create(tmp_path, "es", {})
    stop = EarlyStopping("val_accuracy", patience=1, mode="max", min_delta=1.0)   # can never improve by 1.0
    learner = Learner(task, train, val, epochs=10, run=run, callbacks=[stop])
    learner.fit()
    assert learner.epoch == 2 and "early stopping" in learner.stop_reason
    assert learner.checkpoint_path("best").exists()


def test_grad_norm_stats_records_every_layer():
    task = mlp_task()
    train, _ = loaders()
    stats = GradNormStats(every=2)
    Learner(task, train, epochs=1, callbacks=[stats]).fit()
    assert len(stats.records) == 3
    assert set(stats.records[0]["norms"]) == {"0.weight", "3.weight"}
    assert all(v > 0 for v in stats.summary().values())


def test_bf16_autocast_trains():
    task = mlp_task()
    train, val = loaders()
    learner = Learner(task, train, val, epochs=3, precision="bf16")
    learner.fit()
    assert learner.history[-1]["val_accuracy"] > 0.9


def test_bad_settings_are_user_errors():
    task = mlp_task()
    with pytest.raises(UserError, match="precision"):
        Learner(task, None, precision="8")
    with pytest.raises(UserError, match="CUDA"):
        Learner(task, None, precision="16")
    with pytest.raises(UserError, match="accumulate"):
        Learner(task, None, accumulate=0)


def test_lr_finder_restores_state_and_suggests_a_sane_rate(tmp_path):
    from learnloop.engine.lr_finder import lr_find

    task = mlp_task(optimizer="sgd")
    train, _ = loaders(batch_size=16)
    learner = Learner(task, train)
    w0 = _weights(learner)
    res = lr_find(learner, 1e-5, 10, steps=60)
    assert all(torch.equal(w0[k], v) for k, v in _weights(learner).items())
    assert 1e-4 < res.suggestion < 5 and math.isfinite(res.losses[0])
    res.plot(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 1000


def test_custom_loss_and_metric_plug_in():
    calls = {"loss": 0}

    def my_loss(logits, y):
        calls["loss"] += 1
        return torch.nn.functional.multi_margin_loss(logits, y)

    def error_rate(logits, y):
        return (logits.argmax(1) != y).float().mean()

    task = mlp_task()
    task.loss_fn, task.metrics = my_loss, {"error": error_rate}
    train, val = loaders()
    learner = Learner(task, train, val, epochs=4)
    learner.fit()
    h = learner.history[-1]
    assert calls["loss"] > 0 and "train_error" in h and h["val_error"] < 0.1 and "val_accuracy" not in h
    preds = learner.predict(val)
    assert preds.shape == (64, 3)
