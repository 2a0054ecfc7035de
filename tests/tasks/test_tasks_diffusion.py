"""The diffusion Task: its loss against a hand computation with the same random draws, the Min-SNR weights
against their formula, the loss against torch's MSE, the fixed validation estimate, the Learner loop against
a hand-written loop (same weights), EMA and the CPU budget through the engine, and a conditional model's
keyword inputs."""

import pytest
import torch
import torch.nn.functional as F

from learnloop.data.loader import RandomBatches, TensorLoader
from learnloop.engine.ema import EMA
from learnloop.engine.learner import Learner
from learnloop.engine.optim import OptimConfig
from learnloop.engine.run import RunFolder
from learnloop.losses.diffusion import diffusion_loss, min_snr_weights
from learnloop.models.diffusion import Diffusion, cosine_betas, linear_betas
from learnloop.models.unet import UNet
from learnloop.tasks.diffusion import DiffusionTask, fixed_validation

TINY = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,), attention_heads=2,
            norm_groups=4)


def _unet(seed=0, **kw):
    torch.manual_seed(seed)
    return UNet(8, 1, **{**TINY, **kw})


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.zeros(n, dtype=torch.long)


def test_loss_is_the_simple_objective_computed_by_hand():
    d = Diffusion(linear_betas(100, 1e-3, 0.05))
    for prediction in ("eps", "v"):
        task = DiffusionTask(_unet(), d, prediction=prediction)
        with torch.no_grad():
            for p in task.model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        x0 = torch.rand(4, 1, 8, 8) * 2 - 1
        torch.manual_seed(11)
        got = task.training_step((x0, torch.zeros(4)), None)["loss"]
        torch.manual_seed(11)
        t = torch.randint(0, 100, (4,))
        eps = torch.randn_like(x0)
        abar = d.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        target = eps if prediction == "eps" else abar.sqrt() * eps - (1 - abar).sqrt() * x0
        torch.testing.assert_close(got, F.mse_loss(task.model(x_t, t), target))


def test_min_snr_weights_and_weighted_loss():
    snr = torch.tensor([0.01, 1.0, 5.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(min_snr_weights(snr, 5.0, "eps"), torch.minimum(snr, torch.tensor(5.0)) / snr)
    torch.testing.assert_close(min_snr_weights(snr, 5.0, "v"), torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    assert min_snr_weights(snr, 5.0, "eps")[:3].tolist() == [1.0, 1.0, 1.0]   # SNR <= gamma: weight 1
    out, target = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    w = torch.tensor([1.0, 0.5, 0.0, 2.0])
    per = ((out - target) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(diffusion_loss(out, target), F.mse_loss(out, target))
    torch.testing.assert_close(diffusion_loss(out, target, w), (w * per).mean())
    with pytest.raises(ValueError, match="gamma must be > 0"):
        min_snr_weights(snr, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        diffusion_loss(out, target[:2])


def test_min_snr_task_weights_the_per_sample_errors():
    d = Diffusion(cosine_betas(50))
    task = DiffusionTask(_unet(), d, min_snr_gamma=5.0)
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x0, t, eps = torch.rand(6, 1, 8, 8), torch.tensor([0, 5, 10, 20, 40, 49]), torch.randn(6, 1, 8, 8)
    out = task.model(d.q_sample(x0, t, eps), t)
    snr = d.alphas_cumprod[t] / (1 - d.alphas_cumprod[t])
    want = ((out - eps) ** 2).mean(dim=(1, 2, 3)) * (snr.clamp(max=5.0) / snr).float()
    torch.testing.assert_close(task.loss(x0, t, eps), want.mean())


def test_validation_uses_the_fixed_draws():
    images, labels = _images(32)
    x = images.float() / 127.5 - 1
    t, eps = fixed_validation(x, 100, seed=4)
    t2, eps2 = fixed_validation(x, 100, seed=4)
    assert torch.equal(t, t2) and torch.equal(eps, eps2) and t.max() < 100
    task = DiffusionTask(_unet(), Diffusion(linear_betas(100)))
    learner = Learner(task, None, None)
    loader = TensorLoader([t, eps, x, labels], batch_size=10)
    first, second = learner.validate(loader), learner.validate(loader)
    assert first == second and first["val_loss"] == pytest.approx(1.0, abs=0.1)   # zero output: MSE of eps
    torch.testing.assert_close(torch.tensor(first["val_loss"]), task.loss(x, t, eps), rtol=1e-5, atol=1e-6)


def test_learner_steps_equal_a_hand_written_loop():
    """Same seed: the Task through the Learner and the same U-Net in a plain loop end with equal weights."""
    images, labels = _images(64)
    d = Diffusion(linear_betas(100, 1e-3, 0.05))
    optim = OptimConfig(name="adam", lr=1e-3)
    task = DiffusionTask(_unet(), d, optim)
    loader = RandomBatches(images, labels, batch_size=16, steps=4, seed=0)
    torch.manual_seed(123)
    Learner(task, loader, epochs=1).fit()

    model = _unet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(123)
    loader.set_epoch(0)
    for x0, _ in loader:
        t = torch.randint(0, 100, (len(x0),))
        eps = torch.randn_like(x0)
        loss = ((model(d.q_sample(x0, t, eps), t) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for (name, a), b in zip(task.model.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_ema_and_cpu_budget_through_the_engine():
    images, labels = _images(64)
    task = DiffusionTask(_unet(), Diffusion(linear_betas(50)), OptimConfig(name="adam", lr=1e-3), time_budget_s=1e-9)
    ema = EMA("model", decay=0.9, validate_with_ema=True)
    learner = Learner(task, RandomBatches(images, labels, 16, 3, seed=0), epochs=5, callbacks=[ema])
    history = learner.fit()
    assert len(history) == 1 and "budget of" in learner.stop_reason and history[0]["cpu_min"] > 0
    live, avg = task.model.state_dict(), ema.module.state_dict()
    assert any(not torch.equal(live[k], avg[k]) for k in live)                # the EMA lags the live weights
    assert ema.updates == 3
    state = task.state_dict()
    fresh = DiffusionTask(_unet(), Diffusion(linear_betas(50)))
    fresh.load_state_dict(state)
    assert fresh.elapsed == task.elapsed > 0


def test_an_interrupted_run_resumes_exactly(tmp_path):
    """Training draws t and eps from the global RNG, which checkpoints carry: 1 epoch + resume = 2 epochs."""
    images, labels = _images(64)

    def fit(run, epochs, resume=False):
        task = DiffusionTask(_unet(), Diffusion(linear_betas(50)), OptimConfig(name="adam", lr=1e-3))
        ema = EMA("model", decay=0.9, warmup=True)
        torch.manual_seed(7)
        Learner(task, RandomBatches(images, labels, 16, 3, seed=0), epochs=epochs, run=run, monitor=None,
                callbacks=[ema]).fit(resume=resume)
        return task, ema

    straight, ema_a = fit(RunFolder.create(tmp_path / "a", "ddpm", {}), 2)
    run = RunFolder.create(tmp_path / "b", "ddpm", {})
    fit(run, 1)
    resumed, ema_b = fit(run, 2, resume=True)
    for a, b in zip(list(straight.model.state_dict().values()) + list(ema_a.module.state_dict().values()),
                    list(resumed.model.state_dict().values()) + list(ema_b.module.state_dict().values())):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.elapsed > 0


def test_a_conditional_model_gets_its_inputs_from_the_batch():
    model = _unet(context_dim=6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    seen = []

    def inputs(batch):
        x, ctx, mask = batch[:3]
        seen.append(ctx.shape)
        return x, {"context": ctx, "context_mask": mask}

    task = DiffusionTask(model, Diffusion(linear_betas(20)), inputs=inputs)
    x, ctx, mask = torch.rand(3, 1, 8, 8), torch.randn(3, 2, 6), torch.tensor([[False, True]] * 3)
    loss = task.training_step((x, ctx, mask), None)["loss"]
    t, eps = torch.tensor([1, 2, 3]), torch.randn(3, 1, 8, 8)
    val = task.validation_step((t, eps, x, ctx, mask), None)["loss"]
    assert torch.isfinite(loss) and torch.isfinite(val) and seen == [(3, 2, 6)] * 2
    torch.testing.assert_close(val, task.loss(x, t, eps, {"context": ctx, "context_mask": mask}))
