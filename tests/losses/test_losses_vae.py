"""The VAE objective and the IWAE bound (learnloop.losses.vae): KL against torch.distributions, the ELBO terms
against a hand computation, IWAE_1 = the one-sample ELBO estimator, IWAE_k >= ELBO, and on a linear-Gaussian
model whose log p(x) is known in closed form, ELBO <= IWAE_5 <= IWAE_100 <= log p(x)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from learnloop.losses.vae import (
    bernoulli_nll, elbo_terms, gaussian_kl, iwae_bound, kl_warmup, log_importance_weights, log_normal,
    log_standard_normal, reparameterize, vae_loss,
)


@pytest.mark.parametrize("shape", [(5, 3), (4, 2, 3, 3)])
def test_kl_matches_torch_distributions(shape):
    g = torch.Generator().manual_seed(0)
    mu = 2 * torch.randn(shape, generator=g, dtype=torch.float64)
    logvar = torch.empty(shape, dtype=torch.float64).uniform_(-8, 4, generator=g)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), len(shape) - 1)
    p = Independent(Normal(torch.zeros(shape, dtype=torch.float64), torch.ones(shape, dtype=torch.float64)),
                    len(shape) - 1)
    want = kl_divergence(q, p)
    got = gaussian_kl(mu, logvar)
    assert got.shape == (shape[0],)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(gaussian_kl(torch.zeros(shape), torch.zeros(shape)), torch.zeros(shape[0]))   # q = p


def test_log_densities_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    z, mu = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    logvar = torch.randn(4, 6, generator=g, dtype=torch.float64)
    want = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(1)
    torch.testing.assert_close(log_normal(z, mu, logvar), want)
    torch.testing.assert_close(log_standard_normal(z), Normal(0.0, 1.0).log_prob(z).sum(1))


def test_elbo_terms_by_hand():
    # two pixels, logits 0 and ln 3 -> p = 1/2 and 3/4; targets 1 and 0.25
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.25]], dtype=torch.float64)
    recon_by_hand = -(1 * math.log(0.5)) - (0.25 * math.log(0.75) + 0.75 * math.log(0.25))
    # one latent dim, mu = 1, logvar = ln 4 (sigma^2 = 4): KL = 1/2 (1 + 4 - 1 - ln 4)
    mu, logvar = torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([[math.log(4.0)]], dtype=torch.float64)
    kl_by_hand = 0.5 * (1 + 4 - 1 - math.log(4.0))
    recon, kl = elbo_terms(logits, x, mu, logvar)
    assert float(recon) == pytest.approx(recon_by_hand, abs=1e-12) and recon_by_hand == pytest.approx(1.80479, abs=1e-5)
    assert float(kl) == pytest.approx(kl_by_hand, abs=1e-12) and kl_by_hand == pytest.approx(1.30685, abs=1e-5)
    loss, r, k = vae_loss(logits, x, mu, logvar, kl_weight=0.5)
    assert float(loss) == pytest.approx(recon_by_hand + 0.5 * kl_by_hand) and float(r) == pytest.approx(recon_by_hand)
    images = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    logits = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(bernoulli_nll(logits, images),
                               F.binary_cross_entropy_with_logits(logits, images, reduction="none").sum((1, 2, 3)))


def test_reparameterisation_has_the_posterior_moments():
    mu, logvar = torch.tensor([[1.5, -2.0]]), torch.tensor([[math.log(0.25), math.log(9.0)]])
    eps = torch.tensor([[2.0, -1.0]])
    assert torch.allclose(reparameterize(mu, logvar, eps), torch.tensor([[1.5 + 0.5 * 2.0, -2.0 - 3.0]]))
    z = reparameterize(mu.expand(200_000, 2), logvar.expand(200_000, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), mu[0], atol=0.02) and torch.allclose(z.std(0), torch.tensor([0.5, 3.0]), atol=0.02)


def _toy_decoder(z: torch.Tensor) -> torch.Tensor:
    return torch.stack([z[:, 0] * 2.0 - 1.0, z[:, 1] - z[:, 0], 0.5 * z[:, 1] + 0.3], dim=1)


def test_iwae_with_one_sample_is_the_elbo_estimate_for_that_sample():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8, 3, generator=g, dtype=torch.float64)
    mu, logvar = torch.randn(8, 2, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64)
    z = reparameterize(mu, logvar, generator=g)
    logits = _toy_decoder(z)
    log_w = log_importance_weights(logits, x, z, mu, logvar)
    iwae_1 = iwae_bound(log_w.unsqueeze(0))
    elbo_estimate = -bernoulli_nll(logits, x) + log_standard_normal(z) - log_normal(z, mu, logvar)
    torch.testing.assert_close(iwae_1, elbo_estimate, rtol=0, atol=1e-12)
    # and its expectation is the closed-form ELBO: average over many samples of the same posterior
    n = 100_000
    mu_n, lv_n, x_n = mu[:1].expand(n, 2), logvar[:1].expand(n, 2), x[:1].expand(n, 3)
    z_n = reparameterize(mu_n, lv_n, generator=g)
    sampled = log_importance_weights(_toy_decoder(z_n), x_n, z_n, mu_n, lv_n).mean()
    recon = bernoulli_nll(_toy_decoder(z_n), x_n).mean()
    closed = -(recon + gaussian_kl(mu[:1], logvar[:1])[0])
    assert float(sampled) == pytest.approx(float(closed), abs=0.03)


def test_iwae_is_at_least_the_elbo_for_the_same_samples():
    log_w = torch.randn(7, 50, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    iwae = iwae_bound(log_w, dim=0)
    assert (iwae >= log_w.mean(0)).all() and (iwae > log_w.mean(0)).all()          # strict unless all equal
    torch.testing.assert_close(iwae_bound(torch.full((5, 2), -3.0, dtype=torch.float64)),
                               torch.full((2,), -3.0, dtype=torch.float64))      # equal weights: the weight
    torch.testing.assert_close(iwae, torch.log(torch.exp(log_w).mean(0)))
    with pytest.raises(ValueError):
        iwae_bound(torch.zeros(0, 3))


def test_iwae_tightens_towards_the_exact_log_likelihood_of_a_linear_gaussian_model():
    # z ~ N(0, 1), x | z ~ N(a z, s^2): log p(x) = log N(x; 0, a^2 + s^2) exactly. A deliberately poor
    # q(z|x) = N(0.5 m(x), v(x)) (m, v: the true posterior's mean and variance) leaves a gap that k closes.
    a, s = 1.5, 0.5
    x = torch.linspace(-3, 3, 40, dtype=torch.float64)
    log_px = Normal(0.0, math.sqrt(a * a + s * s)).log_prob(x)
    post_var = 1 / (1 + a * a / s ** 2)
    mu_q = 0.5 * post_var * a * x / s ** 2
    logvar_q = torch.full_like(x, math.log(post_var))
    g = torch.Generator().manual_seed(4)

    def bound(k, reps=400):
        z = mu_q + torch.exp(0.5 * logvar_q) * torch.randn(reps, k, len(x), generator=g, dtype=torch.float64)
        log_w = Normal(a * z, s).log_prob(x) + Normal(0.0, 1.0).log_prob(z) - Normal(mu_q, math.sqrt(post_var)).log_prob(z)
        return iwae_bound(log_w, dim=1).mean(0)             # mean over repetitions: E IWAE_k per x

    elbo, iwae5, iwae100 = bound(1), bound(5), bound(100)
    assert float(elbo.mean()) < float(iwae5.mean()) < float(iwae100.mean()) <= float(log_px.mean()) + 1e-3
    assert float((log_px - iwae100).mean()) < 0.25 * float((log_px - elbo).mean())


def test_kl_warmup_is_linear_then_one():
    assert [kl_warmup(p, 2.0) for p in (0.0, 0.5, 1.0, 2.0, 5.0)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert kl_warmup(0.0, 0.0) == 1.0
