"""The adversarial Task: it learns on real data, n_critic/EMA/clipping bookkeeping, divergence detection, resume."""

import math

import pytest
import torch
from torch import nn

from learnloop.data.vision import load_fashion_mnist
from learnloop.engine.learner import Learner
from learnloop.engine.run import RunFolder
from learnloop.errors import TrainingDiverged, UserError
from learnloop.models.gan import build_gan
from learnloop.recipes.gan import RandomBatches
from learnloop.tasks.adversarial import AdversarialTask, generate, sample_noise

Z = 16


def _fashion(n=2000):
    data = load_fashion_mnist("train")
    return data.images[:n], data.labels[:n]


def _toy_data(n=256):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _task(arch="mlp", num_classes=0, **kw):
    torch.manual_seed(0)
    g, d = build_gan(arch, Z, num_classes, width=16, d_norm="none" if arch == "mlp" else "batch")
    return AdversarialTask(g, d, z_dim=Z, num_classes=num_classes, **kw)


def _mean_image_gap(task, real_images):
    fake = generate(task.sampler, 500, Z, task.num_classes, seed=1)
    real = real_images.float() / 127.5 - 1
    return float((fake.mean(0) - real.mean(0)).abs().mean()), float(fake.std()), float(real.std())


def test_mlp_gan_learns_fashion(needs_fashion):
    images, labels = _fashion()
    task = _task("mlp", lr_g=5e-4, lr_d=5e-4, ema_decay=0.0)
    gap0, _, _ = _mean_image_gap(task, images)
    learner = Learner(task, RandomBatches(images, labels, 64, 100, seed=0), epochs=2, monitor=None)
    learner.fit()
    gap1, fake_std, real_std = _mean_image_gap(task, images)
    # the mean generated image moves onto the data's mean image, and samples are not a single blob
    assert gap1 < 0.5 * gap0, (gap0, gap1)
    assert fake_std > 0.5 * real_std
    last = learner.history[-1]
    assert 0.5 < last["train_d_acc"] < 0.99            # D neither fooled nor winning outright
    assert math.isfinite(last["train_g_loss"])


def test_n_critic_counts_and_weight_clipping():
    images, labels = _toy_data()
    task = _task("mlp", loss="wasserstein", regularizer="clip", clip_value=0.01, n_critic=3, optimizer="rmsprop",
                 ema_decay=0.9)
    learner = Learner(task, RandomBatches(images, labels, 32, 9, seed=0), epochs=1, monitor=None)
    learner.fit()
    assert task.g_steps == 3
    d_state = learner.optimizers["d"].state_dict()["state"]
    assert all(int(s["step"]) == 9 for s in d_state.values())
    assert all(float(p.detach().abs().max()) <= 0.01 + 1e-9 for p in task.d.parameters())
    # EMA copy trails the generator: different from G and from its initial weights
    diffs = [float((pe - p).detach().abs().max()) for pe, p in zip(task.g_ema.parameters(), task.g.parameters())]
    assert max(diffs) > 0


def test_ema_is_between_start_and_generator():
    images, labels = _toy_data()
    task = _task("mlp", ema_decay=0.5)
    start = [p.detach().clone() for p in task.g.parameters()]
    learner = Learner(task, RandomBatches(images, labels, 32, 4, seed=0), epochs=1, monitor=None)
    learner.fit()
    for s, pe, p in zip(start, task.g_ema.parameters(), task.g.parameters()):
        assert float((pe - s).abs().sum()) <= float((p - s).abs().sum()) + 1e-6
    assert "g_ema" in task.modules() and "g_ema" not in _task("mlp", ema_decay=0.0).modules()


def test_gradient_penalty_and_conditional_dcgan_step():
    images, labels = _toy_data(64)
    torch.manual_seed(0)
    g, d = build_gan("dcgan", Z, 10, width=8, d_norm="layer")
    task = AdversarialTask(g, d, z_dim=Z, num_classes=10, loss="wasserstein", regularizer="gp")
    learner = Learner(task, RandomBatches(images, labels, 16, 2, seed=0), epochs=1, monitor=None)
    learner.fit()
    assert learner.history[-1]["train_gp"] >= 0
    x = generate(task.sampler, 20, Z, 10, seed=0)
    assert x.shape == (20, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="conditional"):
        g(torch.randn(2, Z))


def test_discriminator_runaway_is_detected_and_stops(tmp_path):
    images, labels = _toy_data()
    # a frozen generator (lr 0) lets D separate perfectly: D loss -> 0 while G loss keeps rising
    task = _task("mlp", lr_g=0.0, lr_d=2e-3, collapse_patience=2, ema_decay=0.0)
    run = RunFolder.create(tmp_path, "gan", {})
    learner = Learner(task, RandomBatches(images, labels, 32, 12, seed=0), epochs=20, run=run, monitor=None)
    learner.fit()
    assert learner.epoch < 20
    assert "discriminator won" in learner.stop_reason and "D loss" in learner.stop_reason
    assert learner.history[-1]["diverged"] == 1.0
    assert "discriminator won" in (run.path / "log.txt").read_text()


class NaNGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(Z, 784)

    def forward(self, z, y=None):
        return (self.lin(z) * float("nan")).view(-1, 1, 28, 28)


def test_nan_raises_training_diverged():
    images, labels = _toy_data(64)
    _, d = build_gan("mlp", Z, 0, d_norm="none")
    task = AdversarialTask(NaNGenerator(), d, z_dim=Z, ema_decay=0.0)
    learner = Learner(task, RandomBatches(images, labels, 32, 2, seed=0), epochs=1, monitor=None)
    with pytest.raises(TrainingDiverged, match="nan"):
        learner.fit()


def test_sample_grids_checkpoint_and_exact_resume(tmp_path):
    images, labels = _toy_data()

    def fit(run, epochs, resume=False):
        torch.manual_seed(0)
        task = _task("mlp", ema_decay=0.9)
        learner = Learner(task, RandomBatches(images, labels, 32, 3, seed=0), epochs=epochs, run=run, monitor=None)
        learner.fit(resume=resume)
        return task

    straight = fit(RunFolder.create(tmp_path / "a", "gan", {}), 2)
    run = RunFolder.create(tmp_path / "b", "gan", {})
    fit(run, 1)
    resumed = fit(run, 2, resume=True)
    for a, b in zip(straight.g_ema.state_dict().values(), resumed.g_ema.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sorted(p.name for p in run.samples.iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert (run.checkpoints / "best.safetensors").is_file()


def test_truncated_noise_and_bad_settings():
    z = sample_noise(1000, 8, truncation=0.5, generator=torch.Generator().manual_seed(0))
    assert float(z.abs().max()) <= 0.5 and float(z.std()) > 0.2
    with pytest.raises(UserError, match="regularizer"):
        _task(regularizer="dropout")
    with pytest.raises(UserError, match="n_critic"):
        _task(n_critic=0)
    with pytest.raises(ValueError, match="adversarial loss"):
        _task(loss="bce")


@pytest.mark.slow
def test_dcgan_fid_drops_with_training(needs_fashion):
    from learnloop.metrics.generative import feature_stats, fid_from_stats
    from learnloop.models.evaluator import load_fashion_evaluator, reference_stats
    from learnloop.recipes.gan import evaluator_available
    from learnloop.utils.images import to_uint8

    if not evaluator_available():
        pytest.skip("evaluator weights not built (bench/train_evaluator.py)")
    evaluator, ref = load_fashion_evaluator(), reference_stats("test")

    def fid(task):
        feats = evaluator.features(to_uint8(generate(task.sampler, 500, Z, seed=3), (-1, 1)))
        return fid_from_stats(*ref, *feature_stats(feats))

    images, labels = _fashion()
    task = _task("dcgan", ema_decay=0.0)
    before = fid(task)
    Learner(task, RandomBatches(images, labels, 64, 200, seed=0), epochs=1, monitor=None).fit()
    after = fid(task)
    assert after < 0.75 * before, (before, after)
