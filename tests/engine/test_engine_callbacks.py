"""Loop events (order, automatic and manual mode), the generic callbacks ReloadBest, SampleGrid and
WeightClipping, and nested batches (tuples, lists, dicts)."""

import collections

import matplotlib.image
import pytest
import torch

from learnloop.data import TensorLoader
from learnloop.engine import Callback, Learner, RunFolder
from learnloop.engine.callbacks import HOOKS, ReloadBest, SampleGrid, WeightClipping, overrides
from learnloop.engine.checkpoint import load_state
from learnloop.engine.learner import _move
from learnloop.engine.task import Task
from learnloop.errors import UserError
from learnloop.losses.regularizers import clip_weights

from helpers import Regression, TwoPlayer, loaders, mlp_task, regression_data


class Recorder(Callback):
    """Logs every event it receives."""

    def __init__(self):
        self.events = []

    def on_fit_start(self, learner):
        self.events.append("fit_start")

    def on_epoch_start(self, learner):
        self.events.append(f"epoch_start {learner.epoch}")

    def on_before_batch(self, learner, batch):
        self.events.append(f"before_batch {len(batch[0])}")

    def on_after_loss(self, learner, loss):
        assert loss.requires_grad and loss.grad_fn is not None
        self.events.append("after_loss")

    def on_after_backward(self, learner):
        grads = [p.grad for m in learner.task.modules().values() for p in m.parameters()]
        self.events.append("after_backward " + ("grads" if any(g is not None for g in grads) else "none"))

    def on_after_optimizer_step(self, learner, name):
        grads = [p.grad for p in learner.optimizers[name].param_groups[0]["params"]]
        assert all(g is None for g in grads)                   # stepped and zeroed
        self.events.append(f"step {name} {learner.step}")

    def on_batch_end(self, learner, outputs):
        self.events.append("batch_end")

    def on_before_validation(self, learner, stage):
        self.events.append(f"before_validation {stage}")

    def on_after_validation(self, learner, stage, metrics):
        self.events.append(f"after_validation {stage} {sorted(metrics)}")

    def on_epoch_end(self, learner, metrics):
        self.events.append(f"epoch_end {learner.epoch}")

    def on_fit_end(self, learner):
        self.events.append("fit_end")


def test_event_order_in_automatic_mode_with_accumulation():
    x, y = regression_data(10)
    rec = Recorder()
    learner = Learner(Regression(), TensorLoader((x, y), 4), TensorLoader((x, y), 10), epochs=1, accumulate=2,
                      callbacks=[rec], monitor=None)
    learner.fit()
    assert rec.events == [
        "fit_start", "epoch_start 0",
        "before_batch 4", "after_loss", "batch_end",
        "before_batch 4", "after_loss", "after_backward grads", "step main 0", "batch_end",
        "before_batch 2", "after_loss", "after_backward grads", "step main 1", "batch_end",
        "before_validation val", "after_validation val ['val_loss']", "epoch_end 1", "fit_end"]
    rec.events.clear()
    learner.validate(TensorLoader((x, y), 5), "test")
    assert rec.events == ["before_validation test", "after_validation test ['test_loss']"]


def test_event_order_in_manual_mode():
    """learner.backward / learner.optimizer_step(name) fire the same step events; no after_loss."""
    x, y = regression_data(8)
    rec = Recorder()
    Learner(TwoPlayer(), TensorLoader((x, y), 4), epochs=1, callbacks=[rec], monitor=None).fit()
    per_batch = ["after_backward grads", "step a {s}", "after_backward grads", "step b {s}", "batch_end"]
    assert rec.events == ["fit_start", "epoch_start 0",
                          "before_batch 4", *[e.format(s=0) for e in per_batch],
                          "before_batch 4", *[e.format(s=1) for e in per_batch], "epoch_end 1", "fit_end"]


def test_only_overridden_hooks_are_called():
    class OnlyEpochs(Callback):
        def on_epoch_end(self, learner, metrics):
            pass

    cb = OnlyEpochs()
    assert [h for h in HOOKS if overrides(cb, h)] == ["on_epoch_end"]
    assert all(overrides(Recorder(), h) for h in HOOKS)
    learner = Learner(Regression(), None, callbacks=[cb])
    assert {h: len(v) for h, v in learner._hooks.items() if v} == {"on_epoch_end": 1}


def test_callbacks_added_after_construction_fire_and_can_edit_metrics():
    class AddMetric(Callback):
        def on_after_validation(self, learner, stage, metrics):
            metrics[f"{stage}_extra"] = 1.0

    x, y = regression_data(8)
    learner = Learner(Regression(), TensorLoader((x, y), 4), TensorLoader((x, y), 8), epochs=2, monitor=None)
    learner.callbacks.append(AddMetric())
    learner.fit()
    assert all(h["val_extra"] == 1.0 for h in learner.history)


def test_unknown_optimizer_name_is_a_user_error():
    learner = Learner(TwoPlayer(), None)
    with pytest.raises(UserError, match="no optimizer 'c'"):
        learner.optimizer_step("c")


# ReloadBest ---------------------------------------------------------------------------------------------
class ScriptedValLoss(Callback):
    """Replaces val_loss by a scripted value per epoch and keeps each epoch's weights."""

    def __init__(self, values):
        self.values, self.weights = values, []

    def on_after_validation(self, learner, stage, metrics):
        metrics["val_loss"] = self.values[learner.epoch]

    def on_epoch_end(self, learner, metrics):
        self.weights.append({k: v.clone() for k, v in learner.task.model.state_dict().items()})


def test_reload_best_loads_the_best_epochs_weights(tmp_path):
    x, y = regression_data(16)
    script, reload = ScriptedValLoss([3.0, 1.0, 2.0, 4.0]), ReloadBest()
    task = Regression()
    learner = Learner(task, TensorLoader((x, y), 4, shuffle=True), TensorLoader((x, y), 8), epochs=4,
                      run=RunFolder.create(tmp_path, "best", {}), callbacks=[script, reload])
    learner.fit()
    assert reload.loaded_epoch == 2 and learner.best == 1.0
    now = task.model.state_dict()
    assert all(torch.equal(now[k], script.weights[1][k]) for k in now)              # epoch 2 (index 1)
    assert not all(torch.equal(now[k], script.weights[3][k]) for k in now)
    assert load_state(learner.checkpoint_path("last"))["epoch"] == 4                 # `last` untouched


def test_reload_best_without_a_run_or_checkpoint_does_nothing(tmp_path):
    x, y = regression_data(8)
    reload = ReloadBest()
    task = Regression()
    learner = Learner(task, TensorLoader((x, y), 4), epochs=1, callbacks=[reload])
    learner.fit()
    assert reload.loaded_epoch is None
    learner = Learner(task, None, run=RunFolder.create(tmp_path, "empty", {}), callbacks=[reload])
    reload.on_fit_end(learner)
    assert reload.loaded_epoch is None


# SampleGrid ---------------------------------------------------------------------------------------------
def _gray(value, n=4, size=3):
    def fn(learner):
        torch.randn(100)                      # consumes the RNG: must not change training
        return torch.full((n, 1, size, size), float(value))
    return fn


def _levels(path) -> set[int]:
    """Gray levels of a written grid besides black padding and the white page around it."""
    img = matplotlib.image.imread(path)
    return {int(v) for v in (img[..., 0] * 255).round().flatten().tolist()} - {0, 255}


def test_sample_grid_writes_every_k_epochs_and_after_the_last(tmp_path):
    x, y = regression_data(8)
    run = RunFolder.create(tmp_path, "grid", {})
    grid = SampleGrid(_gray(0.5), every=2, nrow=2, value_range=(0, 1))
    Learner(Regression(), TensorLoader((x, y), 4), epochs=5, run=run, name="s", callbacks=[grid]).fit()
    assert sorted(p.name for p in run.samples.iterdir()) == ["s_epoch_002.png", "s_epoch_004.png", "s_epoch_005.png"]
    assert _levels(run.samples / "s_epoch_002.png") == {128}         # 0.5 in [0, 1]
    assert grid.state_dict()["paths"][-1].endswith("s_epoch_005.png")


def test_sample_grid_value_range_minus_one_to_one(tmp_path):
    x, y = regression_data(8)
    run = RunFolder.create(tmp_path, "grid", {})
    Learner(Regression(), TensorLoader((x, y), 4), epochs=1, run=run,
            callbacks=[SampleGrid(_gray(0.5), prefix="g")]).fit()
    assert _levels(run.samples / "g_epoch_001.png") == {191}         # 0.5 in [-1, 1] -> 0.75


def test_sample_grid_leaves_training_unchanged(tmp_path):
    """fn draws from the global RNG, which dropout also uses: forked, so the weights do not change."""
    weights = []
    for cbs in ([], [SampleGrid(_gray(0.0))]):
        task = mlp_task(dropout=0.5)
        train, _ = loaders()
        Learner(task, train, epochs=2, run=RunFolder.create(tmp_path, "grid", {}), callbacks=cbs,
                monitor=None).fit()
        weights.append(task.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_sample_grid_rejects_bad_settings_and_outputs(tmp_path):
    with pytest.raises(UserError, match="value_range"):
        SampleGrid(_gray(0), value_range=(1, 0))
    with pytest.raises(UserError, match="every"):
        SampleGrid(_gray(0), every=0)
    x, y = regression_data(8)
    bad = SampleGrid(lambda learner: torch.zeros(5))
    with pytest.raises(UserError, match=r"\(N, C, H, W\), got \(5,\)"):
        Learner(Regression(), TensorLoader((x, y), 4), run=RunFolder.create(tmp_path, "bad", {}),
                callbacks=[bad]).fit()


# WeightClipping -----------------------------------------------------------------------------------------
def test_weight_clipping_bounds_the_named_module_after_its_steps():
    x, y = regression_data(16)
    x = x * 10
    clip = WeightClipping("b", 0.05, optimizer="b")
    task = TwoPlayer(lr=0.5)

    class Check(Callback):
        def on_after_optimizer_step(self, learner, name):
            if name == "b":
                assert all(p.abs().max() <= 0.05 for p in task.b.parameters())

    Learner(task, TensorLoader((x, y), 4), epochs=2, callbacks=[clip, Check()]).fit()
    assert all(p.abs().max() <= 0.05 for p in task.b.parameters())
    assert max(float(p.detach().abs().max()) for p in task.a.parameters()) > 0.05        # "a" is not clipped
    assert any(float(p.detach().abs().max()) == pytest.approx(0.05) for p in task.b.parameters())   # the clip acted


def test_weight_clipping_equals_clip_weights_after_each_step():
    x, y = regression_data(16)
    clipped, ref = Regression(lr=0.5, batchnorm=False), Regression(lr=0.5, batchnorm=False)

    class ClipByHand(Callback):
        def on_after_optimizer_step(self, learner, name):
            clip_weights(learner.task.model, 0.2)

    Learner(clipped, TensorLoader((x, y), 4), epochs=2, callbacks=[WeightClipping("model", 0.2)]).fit()
    Learner(ref, TensorLoader((x, y), 4), epochs=2, callbacks=[ClipByHand()]).fit()
    assert all(torch.equal(a, b) for a, b in zip(clipped.model.parameters(), ref.model.parameters()))


def test_weight_clipping_errors():
    with pytest.raises(UserError, match="positive"):
        WeightClipping("model", 0.0)
    with pytest.raises(UserError, match="positive"):
        WeightClipping("model", float("nan"))
    x, y = regression_data(8)
    with pytest.raises(UserError, match="no module 'critic'"):
        Learner(Regression(), TensorLoader((x, y), 4), callbacks=[WeightClipping("critic", 0.1)]).fit()


# nested batches -----------------------------------------------------------------------------------------
Pair = collections.namedtuple("Pair", "x y")


def test_batch_size_of_nested_structures():
    task = Regression()
    t5, t3 = torch.zeros(5, 2), torch.zeros(3)
    assert task.batch_size((t5, t3)) == 5
    assert task.batch_size([t3, t5]) == 3
    assert task.batch_size({"meta": "abc", "x": t5, "y": t3}) == 5
    assert task.batch_size({"inputs": {"ids": t3, "mask": t5}, "y": t5}) == 3
    assert task.batch_size(((t3, t5), t5)) == 3
    assert task.batch_size(({"x": t5}, t3)) == 5
    assert task.batch_size((["a", "b"], t5)) == 2
    assert task.batch_size(Pair(t3, t5)) == 3
    assert task.batch_size(t5) == 5
    with pytest.raises(UserError, match="override Task.batch_size"):
        task.batch_size({"meta": "abc"})


def test_to_device_moves_nested_batches():
    learner = Learner(Regression(), None, device="meta")
    batch = {"x": torch.ones(2), "pair": Pair(torch.ones(3), [torch.ones(1), "keep"]), "n": 3,
             "d": collections.defaultdict(list, a=torch.ones(1))}
    moved = learner.to_device(batch)
    assert moved["x"].is_meta and moved["pair"].x.is_meta and moved["pair"].y[0].is_meta
    assert isinstance(moved["pair"], Pair) and moved["pair"].y[1] == "keep" and moved["n"] == 3
    assert moved["d"]["a"].is_meta
    assert _move((torch.ones(1),), torch.device("cpu"))[0].device.type == "cpu"
    cpu = Learner(Regression(), None)
    assert cpu.to_device(batch) is batch                            # no work on the CPU


class DictTask(Task):
    """Batches are {"inputs": {"x": ...}, "y": ...}."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1).double()

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.1)

    def training_step(self, batch, learner):
        return {"loss": (self.model(batch["inputs"]["x"]).squeeze(1) - batch["y"]).pow(2).mean()}

    validation_step = training_step


class DictLoader:
    def __init__(self, x, y, bs):
        self.x, self.y, self.bs = x, y, bs

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __iter__(self):
        for i in range(0, len(self.x), self.bs):
            yield {"inputs": {"x": self.x[i:i + self.bs]}, "y": self.y[i:i + self.bs]}


def test_dict_batches_train_accumulate_and_average_by_size():
    x, y = regression_data(10, dtype=torch.float64)
    big, small = DictTask(), DictTask()
    Learner(big, DictLoader(x, y, 10), epochs=2, monitor=None).fit()
    learner = Learner(small, DictLoader(x, y, 4), DictLoader(x, y, 4), epochs=2, accumulate=3, monitor=None)
    learner.fit()
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with torch.no_grad():
        full = float((small.model(x).squeeze(1) - y).pow(2).mean())
    assert learner.history[-1]["val_loss"] == pytest.approx(full, abs=1e-12)
