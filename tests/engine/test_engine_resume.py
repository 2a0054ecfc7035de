"""History and checkpoints always agree: a run killed at any point between an epoch's checkpoint and its
metrics row, or whose `last` checkpoint is gone, resumes (or restarts) without duplicated or missing rows,
and ends with exactly the rows of an uninterrupted run."""

import json
import shutil

import torch

from learnloop.engine import Callback, Learner, RunFolder, ScheduleConfig
from learnloop.engine.checkpoint import load_state
from learnloop.utils.seed import seed_everything

from helpers import loaders, mlp_task

EPOCHS = 3


def _learner(run, name="", epochs=EPOCHS, log_every=0):
    seed_everything(0)
    train, val = loaders()
    return Learner(mlp_task(), train, val, epochs=epochs, run=run, name=name, log_every=log_every,
                   schedule=ScheduleConfig(kind="one-cycle"))


def _rows(run, stage=None, epoch_rows_only=True):
    rows = [r for r in run.history() if stage is None or r.get("stage", "") == stage]
    if epoch_rows_only:
        rows = [r for r in rows if "time" in r]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _reference(tmp_path, log_every=0):
    run = RunFolder.create(tmp_path, "reference", {})
    learner = _learner(run, log_every=log_every)
    learner.fit()
    return run, learner


def _partial(tmp_path, epochs, sub="killed", log_every=0):
    """A run that stopped after `epochs` epochs of EPOCHS (its learner believes the run has EPOCHS)."""
    run = RunFolder.create(tmp_path, sub, {})
    learner = _learner(run, epochs=EPOCHS, log_every=log_every)
    learner.epochs = epochs
    learner.fit()
    return run


def _resume(run, name="", log_every=0):
    seed_everything(123)                    # a fresh process: the checkpoint must restore everything
    learner = _learner(RunFolder.open(run.path), name=name, log_every=log_every)
    where = learner.try_resume()
    learner.fit()
    return learner, where


def _weights(learner):
    return {k: v.clone() for k, v in learner.task.model.state_dict().items()}


def _drop_last_row(run):
    lines = run.metrics_log.read_text().splitlines(keepends=True)
    run.metrics_log.write_text("".join(lines[:-1]))


def test_row_without_checkpoint_restarts_cleanly(tmp_path):
    """Killed after the first metrics row but before the first checkpoint: the resume starts over, drops
    the orphan row, and the rows read 1, 2, 3 exactly once, equal to an uninterrupted run."""
    ref, ref_learner = _reference(tmp_path)
    run = _partial(tmp_path, 1)
    shutil.rmtree(run.checkpoints)
    assert [r["epoch"] for r in _rows(run)] == [1]
    learner, where = _resume(run)
    assert where is None
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3]
    assert _rows(run) == _rows(ref)
    assert all(torch.equal(a, b) for a, b in zip(_weights(learner).values(), _weights(ref_learner).values()))
    assert "starting over" in (run.path / "log.txt").read_text()


def test_deleted_last_checkpoint_restarts_cleanly(tmp_path):
    ref, _ = _reference(tmp_path)
    run = _partial(tmp_path, 2)
    (run.checkpoints / "last.safetensors").unlink()
    assert (run.checkpoints / "best.safetensors").exists()
    _, where = _resume(run)
    assert where is None
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3] and _rows(run) == _rows(ref)


def test_checkpoint_without_row_is_completed_from_the_checkpoint_history(tmp_path):
    """Killed after epoch 2's checkpoint but before its row: the row comes back from the checkpoint."""
    ref, ref_learner = _reference(tmp_path)
    run = _partial(tmp_path, 2)
    _drop_last_row(run)
    assert [r["epoch"] for r in _rows(run)] == [1]
    learner, where = _resume(run)
    assert where == f"epoch 2, step {2 * 6}"
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3] and _rows(run) == _rows(ref)
    assert all(torch.equal(a, b) for a, b in zip(_weights(learner).values(), _weights(ref_learner).values()))
    assert "resumed at epoch 2, step 12" in (run.path / "log.txt").read_text()


def test_rows_logged_after_the_checkpoint_are_dropped(tmp_path):
    ref, _ = _reference(tmp_path)
    run = _partial(tmp_path, 1)
    run.append_metrics({"epoch": 2, "step": 999, "time": 0.0, "train_loss": 0.0})
    run.append_metrics({"epoch": 2, "step": 999, "time": 0.0, "train_loss": 0.0})
    _resume(run)
    assert _rows(run) == _rows(ref)


def test_step_rows_follow_the_checkpoint(tmp_path):
    """With `log_every`, step rows up to the checkpoint stay, later ones go, none is duplicated."""
    ref, _ = _reference(tmp_path, log_every=2)
    run = _partial(tmp_path, 2, log_every=2)
    run.append_metrics({"step": 14, "epoch": 2.33, "train_loss": 0.5})         # epoch 3's, then killed
    _resume(run, log_every=2)
    assert _rows(run, epoch_rows_only=False) == _rows(ref, epoch_rows_only=False)
    steps = [r["step"] for r in _rows(run, epoch_rows_only=False) if "lr" not in r]
    assert steps == list(range(2, 19, 2))


def test_a_kill_between_last_and_its_best_copy_is_repaired(tmp_path):
    """`best` is a copy of `last` made after it; if the copy never happened, resuming makes it."""
    run = _partial(tmp_path, 1)
    stale = tmp_path / "best_after_epoch_1.safetensors"
    shutil.copyfile(run.checkpoints / "best.safetensors", stale)
    run = RunFolder.open(run.path)
    learner = _learner(run)
    learner.try_resume()
    learner.epochs = 2
    learner.fit()
    assert load_state(run.checkpoints / "best.safetensors")["epoch"] == 2      # monitor val_loss improved
    shutil.copyfile(stale, run.checkpoints / "best.safetensors")               # as if the copy was lost
    _learner(RunFolder.open(run.path)).try_resume()
    assert load_state(run.checkpoints / "best.safetensors")["epoch"] == 2


class _CheckingRun(RunFolder):
    """A run folder that checks, when each epoch row is written, that `last` already holds that epoch."""

    seen: list

    def append_metrics(self, row):
        if "time" in row:
            state = load_state(self.checkpoints / "last.safetensors")
            assert state["epoch"] == row["epoch"] and state["history"][-1]["epoch"] == row["epoch"]
            self.seen.append(row["epoch"])
        super().append_metrics(row)


def test_each_row_is_written_after_its_checkpoint(tmp_path):
    run = _CheckingRun(RunFolder.create(tmp_path, "order", {}).path)
    run.seen = []
    _learner(run).fit()
    assert run.seen == [1, 2, 3]


def test_stages_are_repaired_independently(tmp_path):
    """Stage "a" finished, stage "b" was killed after its first row but before its checkpoint: resuming
    both keeps a's rows, restarts b, and leaves the file in stage order."""
    ref = RunFolder.create(tmp_path, "ref", {})
    for name in ("a", "b"):
        _learner(ref, name=name, epochs=2).fit()
    run = RunFolder.create(tmp_path, "staged", {})
    _learner(run, name="a", epochs=2).fit()
    _learner(run, name="b", epochs=2).fit()
    shutil.rmtree(run.checkpoints / "b")
    run.metrics_log.write_text("".join(run.metrics_log.read_text().splitlines(keepends=True)[:3]))
    assert [(r["stage"], r["epoch"]) for r in _rows(run)] == [("a", 1), ("a", 2), ("b", 1)]
    a = _learner(RunFolder.open(run.path), name="a", epochs=2)
    assert a.try_resume() == "epoch 2, step 12"
    a.fit()
    b = _learner(RunFolder.open(run.path), name="b", epochs=2)
    assert b.try_resume() is None
    b.fit()
    assert [(r["stage"], r["epoch"]) for r in _rows(run)] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert _rows(run) == _rows(ref)


def test_try_resume_without_a_run_folder_is_none():
    train, _ = loaders()
    assert Learner(mlp_task(), train).try_resume() is None


def test_resume_of_a_finished_run_keeps_its_rows(tmp_path):
    ref, _ = _reference(tmp_path)
    before = ref.metrics_log.read_text()
    learner, where = _resume(ref)
    assert where == "epoch 3, step 18" and learner.epoch == EPOCHS
    assert [json.loads(line) for line in ref.metrics_log.read_text().splitlines()] == \
        [json.loads(line) for line in before.splitlines()]


def test_duplicated_history_from_an_old_restart_is_repaired(tmp_path):
    """A log like the one the old resume bug left (epochs 1, 1, 2, the first row from a killed attempt
    with other values): only the rows the checkpoint holds survive."""
    ref, _ = _reference(tmp_path)
    run = _partial(tmp_path, 2)
    lines = run.metrics_log.read_text().splitlines(keepends=True)
    stale = json.loads(lines[0])
    stale["train_loss"] += 1.0
    run.metrics_log.write_text(json.dumps(stale) + "\n" + "".join(lines))
    assert [r["epoch"] for r in _rows(run)] == [1, 1, 2]
    _resume(run)
    assert [r["epoch"] for r in _rows(run)] == [1, 2, 3] and _rows(run) == _rows(ref)


def test_a_row_lost_from_the_middle_is_restored_in_order(tmp_path):
    ref, _ = _reference(tmp_path, log_every=3)
    run = _partial(tmp_path, 2, log_every=3)
    lines = run.metrics_log.read_text().splitlines(keepends=True)
    epoch_1 = next(i for i, line in enumerate(lines) if '"time"' in line)
    run.metrics_log.write_text("".join(lines[:epoch_1] + lines[epoch_1 + 1:]))
    assert [r["epoch"] for r in _rows(run)] == [2]
    _resume(run, log_every=3)
    assert _rows(run, epoch_rows_only=False) == _rows(ref, epoch_rows_only=False)


class _NaNMetric(Callback):
    def on_epoch_end(self, learner, metrics):
        metrics["odd"] = float("nan")


def test_non_finite_metrics_survive_the_repair(tmp_path):
    """However metrics.jsonl writes NaN (NaN or null), a row holding one still matches its checkpoint."""
    def learner(run, epochs=EPOCHS):
        lr = _learner(run, epochs=EPOCHS)
        lr.callbacks.append(_NaNMetric())
        lr.epochs = epochs
        return lr

    ref = RunFolder.create(tmp_path, "ref", {})
    learner(ref).fit()
    run = RunFolder.create(tmp_path, "nan", {})
    learner(run, 2).fit()
    _drop_last_row(run)
    resumed = learner(RunFolder.open(run.path))
    assert resumed.try_resume() == "epoch 2, step 12"
    resumed.fit()
    rows, expected = _rows(run), _rows(ref)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [{k: v for k, v in r.items() if k != "odd"} for r in rows] == \
        [{k: v for k, v in r.items() if k != "odd"} for r in expected]
    assert all(r["odd"] is None or r["odd"] != r["odd"] for r in rows)


def test_same_row():
    from learnloop.engine.run import _same_row

    nan = float("nan")
    assert _same_row({"epoch": 1, "a": None, "b": 0.5}, {"epoch": 1, "a": nan, "b": 0.5})
    assert _same_row({"a": nan}, {"a": nan}) and _same_row({"a": 2}, {"a": 2.0})
    assert not _same_row({"a": 0.5}, {"a": nan})
    assert not _same_row({"a": 0.5}, {"a": 0.5, "stage": "x"})
    assert not _same_row({"a": [1.0]}, {"a": torch.ones(1)})
    assert not _same_row({"a": "1"}, {"a": 1})
