"""The adversarial Task: it learns on real data, n_critic/EMA/clipping (engine callbacks), lazy regularizers,
weighted terms, a generator trained by an L1 term alone, divergence detection, resume."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnloop.data.loader import RandomBatches, TensorLoader
from learnloop.data.vision import load_fashion_mnist
from learnloop.engine.callbacks import Callback, SampleGrid, WeightClipping
from learnloop.engine.ema import EMA
from learnloop.engine.learner import Learner
from learnloop.engine.optim import OptimConfig
from learnloop.engine.run import RunFolder
from learnloop.errors import TrainingDiverged, UserError
from learnloop.models.gan import build_gan
from learnloop.tasks.adversarial import (
    AdversarialTask, Pass, Player, Regularizer, Term, adversarial, generate, noise_gan, sample_noise,
)

Z = 16
SGD0 = OptimConfig(name="sgd", lr=0.0, momentum=0.0)       # parameters never move


def _fashion(n=2000):
    data = load_fashion_mnist("train")
    return data.images[:n], data.labels[:n]


def _toy_data(n=256):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _adam(lr):
    return OptimConfig(name="adam", lr=lr, betas=(0.5, 0.999))


def _task(arch="mlp", num_classes=0, lr_g=2e-4, lr_d=2e-4, optimizer="adam", **kw):
    torch.manual_seed(0)
    g, d = build_gan(arch, Z, num_classes, width=16, d_norm="none" if arch == "mlp" else "batch")
    optim = _adam if optimizer == "adam" else (lambda lr: OptimConfig(name="rmsprop", lr=lr, momentum=0.0))
    return noise_gan(g, d, z_dim=Z, num_classes=num_classes, g_optim=optim(lr_g), d_optim=optim(lr_d), **kw)


def _ema(decay):
    return EMA("generator", decay, optimizer="generator", warmup=True)


def _sampler(task, ema=None):
    return ema.module if ema is not None else task.nets["generator"]


def _mean_image_gap(generator, real_images, num_classes=0):
    fake = generate(generator, 500, Z, num_classes, seed=1)
    real = real_images.float() / 127.5 - 1
    return float((fake.mean(0) - real.mean(0)).abs().mean()), float(fake.std()), float(real.std())


def test_mlp_gan_learns_fashion(needs_fashion):
    images, labels = _fashion()
    task = _task("mlp", lr_g=5e-4, lr_d=5e-4)
    gap0, _, _ = _mean_image_gap(task.nets["generator"], images)
    learner = Learner(task, RandomBatches(images, labels, 64, 100, seed=0), epochs=2, monitor=None)
    learner.fit()
    gap1, fake_std, real_std = _mean_image_gap(task.nets["generator"], images)
    # the mean generated image moves onto the data's mean image, and samples are not a single blob
    assert gap1 < 0.5 * gap0, (gap0, gap1)
    assert fake_std > 0.5 * real_std
    last = learner.history[-1]
    assert 0.5 < last["train_d_acc"] < 0.99            # D neither fooled nor winning outright
    assert math.isfinite(last["train_g_loss"])


def test_n_critic_counts_and_weight_clipping_callback():
    images, labels = _toy_data()
    ema = _ema(0.9)
    task = _task("mlp", loss="wasserstein", n_critic=3, optimizer="rmsprop")
    learner = Learner(task, RandomBatches(images, labels, 32, 9, seed=0), epochs=1, monitor=None,
                      callbacks=[ema, WeightClipping("discriminator", 0.01, optimizer="discriminator")])
    learner.fit()
    assert task.updates == {"generator": 3, "discriminator": 9}
    d_state = learner.optimizers["discriminator"].state_dict()["state"]
    assert all(int(s["step"]) == 9 for s in d_state.values())
    assert all(float(p.detach().abs().max()) <= 0.01 + 1e-9 for p in task.nets["discriminator"].parameters())
    # EMA copy trails the generator: different from G and from its initial weights
    g = task.nets["generator"]
    diffs = [float((pe - p).detach().abs().max()) for pe, p in zip(ema.module.parameters(), g.parameters())]
    assert max(diffs) > 0
    assert ema.updates == 3                            # one EMA update per generator step


def test_ema_callback_is_between_start_and_generator():
    images, labels = _toy_data()
    ema = _ema(0.5)
    task = _task("mlp")
    g = task.nets["generator"]
    start = [p.detach().clone() for p in g.parameters()]
    learner = Learner(task, RandomBatches(images, labels, 32, 4, seed=0), epochs=1, monitor=None, callbacks=[ema])
    learner.fit()
    for s, pe, p in zip(start, ema.module.parameters(), g.parameters()):
        assert float((pe - s).abs().sum()) <= float((p.detach() - s).abs().sum()) + 1e-6
    assert set(task.modules()) == {"generator", "discriminator"}        # the EMA copy is callback state
    assert "shadow" in learner.state_dict()["callbacks"][ema.name]


def test_ema_warmup_schedule_matches_the_formula():
    # theta_ema <- beta_t theta_ema + (1 - beta_t) theta, beta_t = min(beta, (1 + t) / (10 + t)), t = G updates
    images, labels = _toy_data(64)
    ema = _ema(0.999)
    task = _task("mlp")
    g = task.nets["generator"]
    expected = [p.detach().clone() for p in g.parameters()]

    class Track(Callback):
        def on_after_optimizer_step(self, learner, name):
            if name == "generator":
                t = task.updates["generator"] + 1
                beta = min(0.999, (1 + t) / (10 + t))
                for e, p in zip(expected, g.parameters()):
                    e.mul_(beta).add_(p.detach(), alpha=1 - beta)

    Learner(task, RandomBatches(images, labels, 16, 4, seed=0), epochs=1, monitor=None, callbacks=[ema, Track()]).fit()
    for e, pe in zip(expected, ema.module.parameters()):
        torch.testing.assert_close(pe, e, rtol=1e-5, atol=1e-7)


def test_gradient_penalty_and_conditional_dcgan_step():
    images, labels = _toy_data(64)
    torch.manual_seed(0)
    g, d = build_gan("dcgan", Z, 10, width=8, d_norm="layer")
    task = noise_gan(g, d, z_dim=Z, num_classes=10, loss="wasserstein", penalty="gp")
    learner = Learner(task, RandomBatches(images, labels, 16, 2, seed=0), epochs=1, monitor=None)
    learner.fit()
    assert learner.history[-1]["train_gp"] >= 0
    x = generate(g, 20, Z, 10, seed=0)
    assert x.shape == (20, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="conditional"):
        g(torch.randn(2, Z))


class LinearCritic(nn.Module):
    """f(x) = <w, x>: its input gradient is w for every sample, so R1 = ||w||^2 and GP = (||w|| - 1)^2."""

    def __init__(self, norm=2.0):
        super().__init__()
        w = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(0))
        self.w = nn.Parameter(w / w.norm() * norm)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


@pytest.mark.parametrize("kind", ["r1", "gp"])
@pytest.mark.parametrize("every", [1, 3])
def test_lazy_regularizer_gives_k_times_the_penalty_every_k_steps(kind, every):
    weight, norm = 4.0, 2.0
    critic = LinearCritic(norm)
    fixed = nn.Identity()                                 # a "generator" no player trains: fakes are noise
    # the adversarial term has weight 0: the critic's gradient is the penalty's alone
    player = Player("critic", ("critic",), SGD0, (Term("adversarial", 0.0, critic="critic", loss="wasserstein"),),
                    (Regularizer(kind, "critic", weight, every),))
    task = AdversarialTask({"critic": critic, "gen": fixed}, [player],
                           [Pass("fake", "gen", lambda v: (torch.randn_like(v["real"]),))])
    grads, penalties = [], []

    class Record(Callback):
        def on_after_backward(self, learner):
            grads.append(critic.w.grad.detach().clone())

        def on_batch_end(self, learner, outputs):
            penalties.append(float(outputs[kind]))

    data = torch.randn(7 * 8, 1, 4, 4)
    Learner(task, TensorLoader((data,), 8), epochs=1, monitor=None, callbacks=[Record()]).fit()
    w = critic.w.detach()
    # d/dw of the applied term s_t * coef * R: R1 (coef gamma/2): gamma w; GP (coef lambda): 2 lambda (|w|-1) w/|w|
    unit = weight * w if kind == "r1" else 2 * weight * (w.norm() - 1) * w / w.norm()
    penalty = float(w.pow(2).sum()) if kind == "r1" else float((w.norm() - 1) ** 2)
    assert len(grads) == 7
    for t, grad in enumerate(grads):
        scale = every if t % every == 0 else 0
        torch.testing.assert_close(grad, scale * unit, rtol=1e-4, atol=1e-6)
        assert penalties[t] == pytest.approx(scale * penalty, rel=1e-4, abs=1e-6)
    assert task.updates["critic"] == 7


def test_weighted_terms_sum_as_stated():
    torch.manual_seed(0)
    gen, disc = nn.Linear(6, 6), nn.Sequential(nn.Linear(6, 1), nn.Flatten(0))
    terms = (adversarial("disc", weight=0.5), Term("l1", 2.0), Term("l2", 3.0, name="mse"))
    players = [Player("gen", ("gen",), SGD0, terms, tag="g"),
               Player("disc", ("disc",), SGD0, (adversarial("disc"),), tag="d")]
    task = AdversarialTask({"gen": gen, "disc": disc}, players, [Pass("fake", "gen", lambda v: (v["real"],))])
    seen = []

    class Record(Callback):
        def on_batch_end(self, learner, outputs):
            seen.append({k: float(v) for k, v in outputs.items()})

    x = torch.randn(10, 6)
    Learner(task, TensorLoader((x,), 10), epochs=1, monitor=None, callbacks=[Record()]).fit()
    with torch.no_grad():                                 # lr 0: the modules are as they were during the step
        fake = gen(x)
        adv = F.softplus(-disc(fake)).mean()              # non-saturating L_G = -E log sigmoid(D(G(x)))
        l1, l2 = F.l1_loss(fake, x), F.mse_loss(fake, x)
        d_loss = F.binary_cross_entropy_with_logits(disc(x), torch.ones(10)) + \
            F.binary_cross_entropy_with_logits(disc(fake), torch.zeros(10))
    (out,) = seen
    assert out["g_adv"] == pytest.approx(float(adv), rel=1e-6)
    assert out["g_l1"] == pytest.approx(float(l1), rel=1e-6) and out["g_mse"] == pytest.approx(float(l2), rel=1e-6)
    assert out["g_loss"] == pytest.approx(float(0.5 * adv + 2 * l1 + 3 * l2), rel=1e-6)
    assert out["d_loss"] == pytest.approx(float(d_loss), rel=1e-6)


def test_an_l1_term_alone_teaches_a_generator_the_identity_map():
    torch.manual_seed(0)
    gen = nn.Linear(8, 8)
    player = Player("generator", ("generator",), OptimConfig(name="adam", lr=1e-2), (Term("l1"),))
    task = AdversarialTask({"generator": gen}, [player], [Pass("fake", "generator", lambda v: (v["real"],))])
    train, test = torch.randn(4096, 8), torch.randn(256, 8)
    with torch.no_grad():
        before = float((gen(test) - test).abs().mean())
    learner = Learner(task, TensorLoader((train,), 64, shuffle=True), epochs=5, monitor=None)
    learner.fit()
    with torch.no_grad():
        after = float((gen(test) - test).abs().mean())
    assert before > 0.3 and after < 0.02, (before, after)
    assert learner.history[-1]["train_generator_loss"] < 0.02


def test_two_generators_share_one_objective_through_a_cycle_term():
    # CycleGAN's shape: G: A -> B and F: B -> A as two players; the cycle term F(G(a)) vs a, in G's loss, spans
    # both graphs. F's own term has weight 0, so F learns the inverse map only through the joint objective.
    torch.manual_seed(0)
    g_ab, g_ba = nn.Linear(4, 4), nn.Linear(4, 4)
    m, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))   # orthogonal: F = m^T
    adam = OptimConfig(name="adam", lr=1e-2)
    players = [Player("g_ab", ("g_ab",), adam, (Term("l1", output="fake_b", target="b"),
                                               Term("cycle", 1.0, output="rec_a", target="a"))),
               Player("g_ba", ("g_ba",), adam, (Term("l1", 0.0, output="fake_a", target="a"),))]
    passes = [Pass("fake_b", "g_ab", lambda v: (v["a"],)), Pass("fake_a", "g_ba", lambda v: (v["b"],)),
              Pass("rec_a", "g_ba", lambda v: (v["fake_b"],))]
    task = AdversarialTask({"g_ab": g_ab, "g_ba": g_ba}, players, passes, batch=lambda b: {"a": b[0], "b": b[1]})
    a = torch.randn(2048, 4)
    learner = Learner(task, TensorLoader((a, a @ m), 64, shuffle=True), epochs=8, monitor=None)
    learner.fit()
    first, last = learner.history[0], learner.history[-1]
    assert last["train_g_ab_loss"] < 0.1 * first["train_g_ab_loss"] and last["train_g_ab_cycle"] < 0.05
    assert last["train_g_ab_loss"] == pytest.approx(last["train_g_ab_l1"] + last["train_g_ab_cycle"], rel=1e-6)
    test = torch.randn(256, 4)
    with torch.no_grad():
        inverse_error = float((g_ba(test @ m) - test).abs().mean())
    assert inverse_error < 0.05, inverse_error
    assert last["train_g_ba_loss"] == 0.0                      # weight 0: F's own term adds nothing


def test_bad_declarations_are_user_errors():
    net = nn.Linear(2, 2)
    ok = Term("l1")
    with pytest.raises(UserError, match="unknown loss term"):
        AdversarialTask({"g": net}, [Player("g", ("g",), SGD0, (Term("hinge"),))])
    with pytest.raises(UserError, match="two players"):
        AdversarialTask({"g": net}, [Player("a", ("g",), SGD0, (ok,)), Player("b", ("g",), SGD0, (ok,))])
    with pytest.raises(UserError, match="no module 'h'"):
        AdversarialTask({"g": net}, [Player("a", ("h",), SGD0, (ok,))])
    with pytest.raises(UserError, match="only have adversarial terms"):
        AdversarialTask({"d": net}, [Player("d", ("d",), SGD0, (adversarial("d"), ok))])
    with pytest.raises(UserError, match="feature term needs"):
        AdversarialTask({"g": net}, [Player("g", ("g",), SGD0, (Term("feature"),))])
    with pytest.raises(UserError, match="not a critic"):
        AdversarialTask({"g": net}, [Player("g", ("g",), SGD0, (ok,), (Regularizer("r1", "g"),))])
    with pytest.raises(UserError, match="distinct names"):
        AdversarialTask({"g": net}, [Player("g", ("g",), SGD0, (ok, Term("l1", 2.0)))])


def test_discriminator_runaway_is_detected_and_stops(tmp_path):
    images, labels = _toy_data()
    # a frozen generator (lr 0) lets D separate perfectly: D loss -> 0 while G loss keeps rising
    task = _task("mlp", lr_g=0.0, lr_d=2e-3, collapse_patience=2)
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
    task = noise_gan(NaNGenerator(), d, z_dim=Z)
    learner = Learner(task, RandomBatches(images, labels, 32, 2, seed=0), epochs=1, monitor=None)
    with pytest.raises(TrainingDiverged, match="nan"):
        learner.fit()


def test_sample_grids_checkpoint_and_exact_resume(tmp_path):
    images, labels = _toy_data()
    fixed_z = sample_noise(16, Z, generator=torch.Generator().manual_seed(1234))

    def fit(run, epochs, resume=False):
        task = _task("mlp")
        ema = _ema(0.9)
        grid = SampleGrid(lambda learner: ema.module(fixed_z))
        learner = Learner(task, RandomBatches(images, labels, 32, 3, seed=0), epochs=epochs, run=run, monitor=None,
                          callbacks=[ema, grid])
        learner.fit(resume=resume)
        return task, ema

    (straight, ema_a) = fit(RunFolder.create(tmp_path / "a", "gan", {}), 2)
    run = RunFolder.create(tmp_path / "b", "gan", {})
    fit(run, 1)
    resumed, ema_b = fit(run, 2, resume=True)
    for a, b in zip(ema_a.module.state_dict().values(), ema_b.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(straight.nets["discriminator"].state_dict().values(),
                    resumed.nets["discriminator"].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.updates == straight.updates == {"generator": 6, "discriminator": 6}
    assert sorted(p.name for p in run.samples.iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert (run.checkpoints / "best.safetensors").is_file()


def test_truncated_noise_and_bad_settings():
    z = sample_noise(1000, 8, truncation=0.5, generator=torch.Generator().manual_seed(0))
    assert float(z.abs().max()) <= 0.5 and float(z.std()) > 0.2
    with pytest.raises(UserError, match="regularizer"):
        _task(penalty="dropout")
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
        feats = evaluator.features(to_uint8(generate(task.nets["generator"], 500, Z, seed=3), (-1, 1)))
        return fid_from_stats(*ref, *feature_stats(feats))

    images, labels = _fashion()
    task = _task("dcgan")
    before = fid(task)
    Learner(task, RandomBatches(images, labels, 64, 200, seed=0), epochs=1, monitor=None).fit()
    after = fid(task)
    assert after < 0.75 * before, (before, after)
