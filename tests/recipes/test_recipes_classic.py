"""'It learns' tests: each classic recipe on a small real subset, seconds each."""

import json

import pytest
import torch

import learnloop
from learnloop.cli import main
from learnloop.engine.learner import Learner

FAST = dict(progress=False, quiet=True)


def test_mlp_fashion_learns(tmp_path, needs_fashion):
    run = learnloop.run("mlp-fashion", out=tmp_path, epochs=2, data__subset=3000, **FAST)
    assert run.metrics["test_accuracy"] > 0.75
    assert isinstance(run.model, torch.nn.Module) and (run.folder / "plots" / "top_losses.png").is_file()


def test_softmax_regression_learns(tmp_path, needs_fashion):
    run = learnloop.run("softmax-regression", out=tmp_path, epochs=2, data__subset=3000, **FAST)
    assert run.metrics["test_accuracy"] > 0.7


def test_cnn_fashion_learns(tmp_path, needs_fashion):
    run = learnloop.run("cnn-fashion", out=tmp_path, epochs=2, data__subset=1000, data__val_fraction=0.02, **FAST)
    assert run.metrics["test_accuracy"] > 0.6


def test_logreg_binary_both_problems(tmp_path, needs_fashion):
    run = learnloop.run("logreg-binary", out=tmp_path, **FAST)
    m = run.metrics
    assert m["digits-0v1_test_accuracy"] > 0.97 and m["fashion-tshirt-v-trouser_test_accuracy"] > 0.95
    assert (run.folder / "plots" / "digits-0v1_confusion_matrix.png").is_file()


def test_gradient_flow_shows_vanishing(tmp_path, needs_fashion):
    run = learnloop.run("gradient-flow", out=tmp_path, epochs=1, data__subset=1000, depth=8,
                        activations=("sigmoid", "relu"), inits=("normal", "xavier", "kaiming"), **FAST)
    m = run.metrics
    # sigmoid + Xavier: gradients at the input side are orders of magnitude below the output side (vanishing)
    assert m["sigmoid_xavier_grad_ratio_first_last"] < 1e-2
    # ReLU + N(0, 1): gradients explode (or the loss overflows outright)
    assert m["relu_normal_diverged"] or m["relu_normal_grad_norm_input_layer"] > 100 * m["relu_kaiming_grad_norm_input_layer"]
    # ReLU + Kaiming keeps them balanced and learns best
    assert 0.1 < m["relu_kaiming_grad_ratio_first_last"] < 10
    assert m["relu_kaiming_test_accuracy"] > max(m["sigmoid_xavier_test_accuracy"], m["sigmoid_normal_test_accuracy"])
    assert (run.folder / "plots" / "gradient_norms_per_layer.png").is_file()


def test_same_seed_same_metrics(tmp_path):
    a = learnloop.run("mlp-digits", out=tmp_path, epochs=2, seed=7, **FAST).metrics
    b = learnloop.run("mlp-digits", out=tmp_path, epochs=2, seed=7, **FAST).metrics
    drop = ("wall_time_s",)
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_interrupted_run_resumes_exactly(tmp_path, monkeypatch, capsys):
    straight = learnloop.run("mlp-digits", out=tmp_path / "a", epochs=3, **FAST)

    original = Learner._train_epoch

    def interrupt_in_epoch_3(self):
        if self.epoch == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Learner, "_train_epoch", interrupt_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        learnloop.run("mlp-digits", out=tmp_path / "b", epochs=3, **FAST)
    monkeypatch.undo()
    folder = next((tmp_path / "b" / "mlp-digits").iterdir())
    assert not (folder / "metrics.json").exists()
    assert main(["resume", str(folder)]) == 0
    resumed = json.loads((folder / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "best_val_loss"):
        assert resumed[key] == straight.metrics[key]
    epochs = [r["epoch"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())]
    assert epochs == [1, 2, 3]


def test_tensorboard_tracking(tmp_path):
    pytest.importorskip("tensorboard")
    run = learnloop.run("mlp-digits", out=tmp_path, epochs=1, track="tensorboard", **FAST)
    assert list((run.folder / "tensorboard").rglob("events.out.tfevents.*"))
