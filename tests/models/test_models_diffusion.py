"""Gaussian diffusion: schedules against their formulas written out in float64 and pinned published values,
the posterior against Gaussian conditioning, targets and their inversions, the timesteps each spacing
picks (Lin et al., 2024, Table 2; diffusers' formulas), DDIM(eta = 1) = DDPM with the posterior variance
(formula, same draws, and in distribution on an analytic Gaussian model), no noise at the last step, seeds.

diffusers is not installed in this environment, so the pinned values were checked against the papers'
formulas computed independently here (numpy / math in float64) rather than against diffusers' tables."""

import math

import numpy as np
import pytest
import torch

from learnloop.errors import UserError
from learnloop.models.diffusion import (
    Diffusion, cosine_betas, ddim_sigma, linear_betas, make_betas, sample, sampling_timesteps, step_variances,
)
from learnloop.models.unet import UNet

T = 1000


# --- schedules ------------------------------------------------------------------------------------------------
def test_linear_schedule_is_ho_et_al_with_pinned_values():
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    abar = np.cumprod(1 - betas)
    d = Diffusion(linear_betas())
    np.testing.assert_allclose(d.betas.numpy(), betas, rtol=1e-14)
    np.testing.assert_allclose(d.alphas_cumprod.numpy(), abar, rtol=1e-12)
    assert d.betas[0] == 1e-4 and d.betas[-1] == 0.02
    assert d.alphas_cumprod[999].item() == pytest.approx(4.035829765375676e-05, rel=1e-9)   # "~ 4.04e-5"
    assert d.alphas_cumprod[499].item() == pytest.approx(0.07858724288177824, rel=1e-9)
    assert d.alphas_cumprod[0].item() == pytest.approx(0.9999, rel=1e-15)
    assert d.posterior_variance[0].item() == 0.0
    assert d.posterior_variance[1].item() == pytest.approx(5.4531876613021935e-05, rel=1e-9)
    assert d.posterior_variance[999].item() == pytest.approx(0.01999998352656061, rel=1e-9)
    # Ho et al.'s code: log variance with the t = 0 entry replaced by t = 1's
    assert d.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(5.4531876613021935e-05), rel=1e-12)
    np.testing.assert_allclose(d.posterior_log_variance_clipped[1:].numpy(), np.log(d.posterior_variance[1:].numpy()))


def test_cosine_schedule_is_nichol_dhariwal_with_pinned_values():
    f = [math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(T + 1)]
    betas = np.array([min(1 - f[t + 1] / f[t], 0.999) for t in range(T)])
    d = Diffusion(cosine_betas())
    np.testing.assert_allclose(d.betas.numpy(), betas, rtol=1e-10)
    assert int((d.betas == 0.999).sum()) == 1 and d.betas[-1] == 0.999          # only the last beta is clipped
    # before the clip, abar_t = f(t + 1) / f(0) (t = 0..T-1 here is t + 1 in the paper)
    np.testing.assert_allclose(d.alphas_cumprod[:-1].numpy(), np.array(f[1:T]) / f[0], rtol=1e-10)
    assert d.betas[0].item() == pytest.approx(4.128422482196914e-05, rel=1e-8)
    assert d.alphas_cumprod[0].item() == pytest.approx(0.999958715775178, rel=1e-12)
    assert d.alphas_cumprod[499].item() == pytest.approx(0.4938435904406382, rel=1e-9)
    assert d.alphas_cumprod[999].item() == pytest.approx(2.4287669070348567e-09, rel=1e-7)
    pv = betas * np.append(1.0, np.cumprod(1 - betas)[:-1]).__rsub__(1) / (1 - np.cumprod(1 - betas))
    np.testing.assert_allclose(d.posterior_variance.numpy(), pv, rtol=1e-9, atol=1e-300)


def test_schedule_arguments_are_checked():
    with pytest.raises(UserError, match="positive int"):
        linear_betas(0)
    with pytest.raises(UserError, match="beta_start <= beta_end"):
        linear_betas(10, 0.5, 0.1)
    with pytest.raises(UserError, match="unknown beta schedule 'quad'"):
        make_betas("quad")
    with pytest.raises(UserError, match="values in \\(0, 1\\)"):
        Diffusion(torch.tensor([0.1, 1.0]))


def test_posterior_is_the_gaussian_conditional_of_the_forward_process():
    """q(x_{t-1} | x_t, x_0) by conditioning the joint of x_{t-1} = sqrt(abar') x_0 + sqrt(1 - abar') e and
    x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e': K = Cov / Var, mean = sqrt(abar') x_0 + K (x_t - sqrt(abar) x_0)."""
    for d in (Diffusion(linear_betas()), Diffusion(cosine_betas())):
        b = d.betas.numpy()
        abar = np.cumprod(1 - b)
        prev = np.append(1.0, abar[:-1])
        k = np.sqrt(1 - b) * (1 - prev) / (1 - abar)
        np.testing.assert_allclose(d.posterior_mean_coef2.numpy(), k, rtol=1e-10)
        np.testing.assert_allclose(d.posterior_mean_coef1.numpy(), np.sqrt(prev) - k * np.sqrt(abar), rtol=1e-8,
                                   atol=1e-12)
        np.testing.assert_allclose(d.posterior_variance.numpy(), (1 - prev) - k ** 2 * (1 - abar), rtol=1e-6,
                                   atol=1e-15)


def test_q_sample_targets_and_their_inversions():
    d = Diffusion(cosine_betas())
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 1, 4, 4, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    a = d.alphas_cumprod[t].float().sqrt().view(-1, 1, 1, 1)
    s = (1 - d.alphas_cumprod[t]).float().sqrt().view(-1, 1, 1, 1)
    x_t = d.q_sample(x0, t, eps)
    torch.testing.assert_close(x_t, a * x0 + s * eps)
    torch.testing.assert_close(d.target(x0, eps, t, "eps"), eps)
    v = d.target(x0, eps, t, "v")
    torch.testing.assert_close(v, a * eps - s * x0)                       # Salimans & Ho (2022)
    for prediction, out in (("eps", eps), ("v", v)):
        x0_hat, eps_hat = d.split(x_t, t, out, prediction)
        torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(x0_hat[:5], x0[:5], atol=1e-4, rtol=1e-4)   # t = 999: x_0 barely in x_t
    np.testing.assert_allclose(d.snr(t).numpy(), (d.alphas_cumprod[t] / (1 - d.alphas_cumprod[t])).numpy())
    with pytest.raises(UserError, match="timesteps must lie in 0..999"):
        d.q_sample(x0, torch.full((6,), 1000), eps)
    with pytest.raises(UserError, match="unknown prediction 'x0'"):
        d.target(x0, eps, t, "x0")


# --- timestep spacing ---------------------------------------------------------------------------------------
def test_five_step_timesteps_of_each_spacing():
    assert sampling_timesteps(T, 5, "leading") == [800, 600, 400, 200, 0]
    assert sampling_timesteps(T, 5, "leading", steps_offset=1) == [801, 601, 401, 201, 1]   # Stable Diffusion
    assert sampling_timesteps(T, 5, "trailing") == [999, 799, 599, 399, 199]
    assert sampling_timesteps(T, 5, "linspace") == [999, 749, 500, 250, 0]     # 499.5 rounds to even


def test_ten_step_timesteps_are_lin_et_al_table_2():
    assert sampling_timesteps(T, 10, "linspace") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert sampling_timesteps(T, 10, "leading") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert sampling_timesteps(T, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]


def _diffusers(T, S, spacing, offset=0):
    """diffusers' DDIM/DDPM `set_timesteps` formulas, verbatim in numpy."""
    if spacing == "linspace":
        return np.linspace(0, T - 1, S).round()[::-1].copy().astype(np.int64)
    if spacing == "leading":
        return (np.arange(0, S) * (T // S)).round()[::-1].copy().astype(np.int64) + offset
    return np.round(np.arange(T, 0, -T / S)).astype(np.int64) - 1


@pytest.mark.parametrize("S", [1, 2, 3, 4, 5, 7, 8, 10, 20, 25, 50, 100, 200, 250, 500, 999, 1000])
def test_timesteps_match_diffusers_formulas(S):
    for spacing in ("leading", "trailing", "linspace") if S > 1 else ("leading", "trailing"):
        ts = sampling_timesteps(T, S, spacing)
        assert ts == _diffusers(T, S, spacing).tolist(), spacing
        assert len(ts) == S and len(set(ts)) == S and ts == sorted(ts, reverse=True)
        assert 0 <= ts[-1] and ts[0] <= T - 1
    assert sampling_timesteps(T, S, "trailing")[0] == T - 1                    # Lin et al.: start at the end


def test_one_linspace_step_starts_at_the_last_timestep():
    """np.linspace(0, T - 1, 1) is [0]: diffusers would denoise pure noise as if it were x_0; we take T - 1."""
    assert _diffusers(T, 1, "linspace").tolist() == [0] and sampling_timesteps(T, 1, "linspace") == [999]


def test_exact_rounding_where_float_arange_fails():
    """For S = 61 diffusers' float arange yields 62 trailing timesteps, the last -1; ours stay exact."""
    assert len(_diffusers(T, 61, "trailing")) == 62 and _diffusers(T, 61, "trailing")[-1] == -1
    ts = sampling_timesteps(T, 61, "trailing")
    assert len(ts) == 61 and ts[-1] == round(1000 / 61) - 1 == 15


def test_spacing_errors():
    with pytest.raises(UserError, match="sampling steps must be an int in 1..T=1000"):
        sampling_timesteps(T, 1001)
    with pytest.raises(UserError, match="in 1..T"):
        sampling_timesteps(T, 0)
    with pytest.raises(UserError, match="unknown timestep spacing 'even'"):
        sampling_timesteps(T, 5, "even")
    with pytest.raises(UserError, match="leading spacing only"):
        sampling_timesteps(T, 5, "trailing", steps_offset=1)
    with pytest.raises(UserError, match="outside 0..999"):
        sampling_timesteps(T, 5, "leading", steps_offset=200)


# --- the samplers' variances ----------------------------------------------------------------------------------
@pytest.mark.parametrize("steps, spacing", [(None, "trailing"), (50, "trailing"), (50, "leading"), (7, "linspace")])
def test_ddim_with_eta_1_has_ddpm_posterior_variances(steps, spacing):
    d = Diffusion(linear_betas())
    ddim = step_variances(d, steps, spacing, sampler="ddim", eta=1.0)
    ddpm = step_variances(d, steps, spacing, sampler="ddpm", variance="beta_tilde")
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-9)
    assert ddpm[-1] == 0.0 and all(v > 0 for v in ddpm[:-1])
    if steps is None:            # all T steps: the original process, sigma^2 = beta~_t for t = T-1..1
        np.testing.assert_allclose(ddpm[:-1], d.posterior_variance.flip(0)[:-1].numpy(), rtol=1e-9)
        np.testing.assert_allclose(step_variances(d, None, spacing, variance="beta")[:-1],
                                   d.betas.flip(0)[:-1].numpy(), rtol=1e-9)
    assert all(v == 0 for v in step_variances(d, steps, spacing, sampler="ddim", eta=0.0))


def test_ddim_sigma_formula():
    abar, prev = 0.3, 0.5
    assert ddim_sigma(abar, prev, 1.0) ** 2 == pytest.approx((1 - prev) / (1 - abar) * (1 - abar / prev))
    assert ddim_sigma(abar, prev, 0.5) == pytest.approx(0.5 * ddim_sigma(abar, prev, 1.0))


def test_respaced_process_over_all_steps_is_the_original():
    d = Diffusion(cosine_betas())
    r = d.respaced(range(T))
    np.testing.assert_allclose(r.betas.numpy(), d.betas.numpy(), rtol=1e-9)
    np.testing.assert_allclose(r.posterior_variance.numpy(), d.posterior_variance.numpy(), rtol=1e-8)
    sub = d.respaced([999, 499, 0])
    np.testing.assert_allclose(sub.alphas_cumprod.numpy(), d.alphas_cumprod[[0, 499, 999]].numpy(), rtol=1e-7)


# --- sampling -------------------------------------------------------------------------------------------------
class OptimalGaussian:
    """The exact E[eps | x_t] (or E[v | x_t]) for data x_0 ~ N(mu, s^2) per coordinate."""

    def __init__(self, d: Diffusion, mu: float, s: float, prediction: str = "eps"):
        self.abar, self.mu, self.s2, self.prediction = d.alphas_cumprod, mu, s * s, prediction

    def __call__(self, x, t):
        abar = self.abar[t].to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        var = abar * self.s2 + 1 - abar
        eps = (1 - abar).sqrt() * (x - abar.sqrt() * self.mu) / var
        if self.prediction == "eps":
            return eps
        x0 = self.mu + abar.sqrt() * self.s2 * (x - abar.sqrt() * self.mu) / var
        return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def exact_output_law(d: Diffusion, mu: float, s: float, ts: list[int], sampler: str, eta: float = 1.0):
    """Mean and variance of the sampler's output for the optimal predictor, by the linear recursion each
    step is (Ho et al. eq. 7 / Song et al. eq. 12 written out here), starting from x_T ~ N(0, 1)."""
    abar = d.alphas_cumprod.numpy()
    m, v = 0.0, 1.0
    for n, t in enumerate(ts):
        ab, ap = abar[t], (abar[ts[n + 1]] if n + 1 < len(ts) else 1.0)
        var_t = ab * s * s + 1 - ab
        ce, de = math.sqrt(1 - ab) / var_t, -math.sqrt(1 - ab) * math.sqrt(ab) * mu / var_t   # eps = ce x + de
        cx, dx = (1 - math.sqrt(1 - ab) * ce) / math.sqrt(ab), -math.sqrt(1 - ab) * de / math.sqrt(ab)
        b = 1 - ab / ap
        if sampler == "ddpm":
            c1, c2 = math.sqrt(ap) * b / (1 - ab), math.sqrt(1 - b) * (1 - ap) / (1 - ab)
            A, B = c1 * cx + c2, c1 * dx
            sig2 = (1 - ap) / (1 - ab) * b if n + 1 < len(ts) else 0.0
        else:
            sig2 = eta ** 2 * (1 - ap) / (1 - ab) * b
            k = math.sqrt(max(1 - ap - sig2, 0.0))
            A, B = math.sqrt(ap) * cx + k * ce, math.sqrt(ap) * dx + k * de
        m, v = A * m + B, A * A * v + sig2
    return m, v


@pytest.mark.parametrize("sampler, steps, eta", [("ddpm", None, 0.0), ("ddim", None, 1.0), ("ddim", 50, 0.0),
                                                  ("ddpm", 50, 0.0), ("ddim", 20, 0.5)])
def test_samplers_reach_the_known_output_law_on_a_gaussian(sampler, steps, eta):
    d = Diffusion(linear_betas())
    mu, s, n = 0.3, 0.5, 20_000
    ts = sampling_timesteps(T, steps or T, "trailing")
    x = sample(OptimalGaussian(d, mu, s), d, (n, 1, 1, 1), sampler=sampler, steps=steps, eta=eta, clip=False,
               generator=torch.Generator().manual_seed(3)).double().flatten()
    m, v = exact_output_law(d, mu, s, ts, sampler, eta)
    assert abs(x.mean().item() - m) < 4 * math.sqrt(v / n)
    assert abs(x.var().item() - v) < 4 * v * math.sqrt(2 / n)
    if steps is None:                        # all T steps: that law is the data's, up to discretisation
        assert abs(m - mu) < 1e-3 and abs(v - s * s) < 0.01
    else:                                    # few large steps shrink the variance (each DDIM step maps the
        assert v < s * s                     # Gaussian marginal with a factor cos^2 of the angle it turns)


def test_ddim_eta_1_is_ddpm_with_posterior_variance_step_by_step():
    """Same seed, same draws: identical samples from a nonlinear network, all steps and a sub-sequence."""
    torch.manual_seed(0)
    net = UNet(8, 1, base_channels=8, channel_mult=(1, 2), attention_resolutions=(4,), attention_heads=2,
               norm_groups=4).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    d = Diffusion(linear_betas(50, 1e-3, 0.2))
    for steps in (None, 9):
        kw = dict(steps=steps, spacing="trailing", clip=True)
        a = sample(net, d, (4, 1, 8, 8), sampler="ddpm", variance="beta_tilde",
                   generator=torch.Generator().manual_seed(5), **kw)
        b = sample(net, d, (4, 1, 8, 8), sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(5), **kw)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        c = sample(net, d, (4, 1, 8, 8), sampler="ddpm", variance="beta", generator=torch.Generator().manual_seed(5),
                   **kw)
        assert (c - a).abs().max() > 1e-3                                   # the other variance does differ


def test_v_prediction_samples_equal_eps_prediction_samples_for_the_same_optimal_model():
    d = Diffusion(cosine_betas(100))
    for sampler in ("ddpm", "ddim"):
        out = [sample(OptimalGaussian(d, 0.1, 0.4, p), d, (64, 1, 2, 2), sampler=sampler, eta=0.3, prediction=p,
                      clip=False, generator=torch.Generator().manual_seed(1)) for p in ("eps", "v")]
        torch.testing.assert_close(out[0], out[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_no_noise_at_the_last_step(variance):
    """Point-mass data x_0 = c: the optimal model predicts x0_hat = c exactly, so the output is c itself
    only if the last step adds no noise (with sigma^2 = beta_0 it would be c + 0.01 z)."""
    d = Diffusion(linear_betas())
    model = OptimalGaussian(d, 0.25, 0.0)
    x = sample(model, d, (256, 1, 1, 1), sampler="ddpm", variance=variance, clip=False,
               generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, torch.full_like(x, 0.25), atol=1e-4, rtol=0)


def test_sampling_is_deterministic_given_the_seed():
    net = UNet(8, 1, base_channels=8, channel_mult=(1,), attention_resolutions=(), attention_heads=2, norm_groups=4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    d = Diffusion(linear_betas(30, 1e-3, 0.2))
    for sampler, eta in (("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)):
        run = [sample(net.eval(), d, (3, 1, 8, 8), sampler=sampler, eta=eta, steps=10,
                      generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
        assert torch.equal(run[0], run[1]) and not torch.equal(run[0], run[2])
        assert run[0].abs().max() <= 1.0                                    # clipped x0 at the last step
    noise = torch.randn(3, 1, 8, 8)
    a = sample(net, d, (3, 1, 8, 8), sampler="ddim", steps=10, noise=noise, generator=torch.Generator().manual_seed(1))
    b = sample(net, d, (3, 1, 8, 8), sampler="ddim", steps=10, noise=noise, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)                      # eta = 0: x_T fixes the sample, the generator is not drawn


def test_sampler_arguments_are_checked():
    d = Diffusion(linear_betas(10))
    model = OptimalGaussian(d, 0.0, 1.0)
    for kwargs, match in ((dict(sampler="pndm"), "unknown sampler"), (dict(variance="large"), "unknown DDPM variance"),
                          (dict(eta=1.5), "eta must be in"), (dict(steps=11), "in 1..T=10"),
                          (dict(prediction="x0"), "unknown prediction")):
        with pytest.raises(UserError, match=match):
            sample(model, d, (2, 1, 1, 1), **kwargs)


def test_sample_passes_the_conditioning_to_the_model():
    """A text-to-image U-Net gets its context on every call (model_kwargs)."""
    torch.manual_seed(0)
    net = UNet(8, 1, base_channels=8, channel_mult=(1,), attention_resolutions=(8,), attention_heads=2, norm_groups=4,
               context_dim=6).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    d = Diffusion(linear_betas(20, 1e-3, 0.2))
    mask = torch.tensor([[False, False, True]] * 2)
    out = [sample(net, d, (2, 1, 8, 8), steps=5, generator=torch.Generator().manual_seed(0),
                  model_kwargs={"context": ctx, "context_mask": mask}) for ctx in (torch.zeros(2, 3, 6), torch.ones(2, 3, 6))]
    assert (out[0] - out[1]).abs().max() > 1e-4
    with pytest.raises(UserError, match="attends to a context"):
        sample(net, d, (2, 1, 8, 8), steps=5)
