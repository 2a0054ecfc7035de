"""Adversarial losses against their BCE/MSE definitions, the reconstruction/feature terms against torch.nn's
losses, and the Lipschitz regularizers' properties (with the lazy-regularization scale)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from learnloop.losses.adversarial import (
    ADVERSARIAL_LOSSES,
    adversarial_loss,
    d_loss,
    discriminator_accuracy,
    feature_loss,
    g_loss,
    reconstruction_loss,
)
from learnloop.losses.regularizers import clip_weights, gradient_penalty, interpolate, lazy_scale, r1_penalty


@pytest.fixture
def scores():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, generator=g) + 1, torch.randn(64, generator=g) - 1


def test_bce_losses_match_binary_cross_entropy(scores):
    real, fake = scores
    ones, zeros = torch.ones_like(real), torch.zeros_like(fake)
    bce = F.binary_cross_entropy_with_logits
    expected_d = bce(real, ones) + bce(fake, zeros)
    torch.testing.assert_close(d_loss("minimax", real, fake), expected_d)
    torch.testing.assert_close(d_loss("non-saturating", real, fake), expected_d)
    torch.testing.assert_close(g_loss("non-saturating", fake), bce(fake, ones))
    torch.testing.assert_close(g_loss("minimax", fake), torch.log1p(-torch.sigmoid(fake)).mean())


def test_least_squares_hinge_wasserstein_definitions(scores):
    real, fake = scores
    torch.testing.assert_close(d_loss("least-squares", real, fake),
                               0.5 * F.mse_loss(real, torch.ones_like(real)) + 0.5 * F.mse_loss(fake, 0 * fake))
    torch.testing.assert_close(g_loss("least-squares", fake), 0.5 * F.mse_loss(fake, torch.ones_like(fake)))
    torch.testing.assert_close(d_loss("wasserstein", real, fake), fake.mean() - real.mean())
    torch.testing.assert_close(g_loss("wasserstein", fake), -fake.mean())
    torch.testing.assert_close(d_loss("hinge", real, fake),
                               torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean())
    # hinge: zero once every margin is met
    assert float(d_loss("hinge", real.abs() + 1, -fake.abs() - 1)) == 0.0


def test_minimax_generator_loss_saturates_but_non_saturating_does_not():
    fake = torch.full((16,), -8.0, requires_grad=True)       # D is sure these are fake
    grads = {}
    for name in ("minimax", "non-saturating"):
        (gr,) = torch.autograd.grad(g_loss(name, fake), fake)
        grads[name] = float(gr.abs().sum())
    assert grads["minimax"] < 1e-3
    assert grads["non-saturating"] > 0.9


def test_every_loss_rewards_the_discriminator_for_separating():
    for name, loss in ADVERSARIAL_LOSSES.items():
        t = loss.threshold                     # real targets above it, fake below (LSGAN: 1 and 0)
        hi, lo = torch.full((8,), 1.0), torch.full((8,), 2 * t - 1)
        assert d_loss(name, hi, lo) < d_loss(name, lo, hi), name
        assert g_loss(name, hi) < g_loss(name, lo), name


def test_discriminator_accuracy(scores):
    real, fake = scores
    assert float(discriminator_accuracy("non-saturating", real + 10, fake - 10)) == 1.0
    assert float(discriminator_accuracy("hinge", fake - 10, real + 10)) == 0.0
    # Wasserstein: threshold is the midpoint, so an offset does not matter
    assert float(discriminator_accuracy("wasserstein", real + 100, fake + 90)) > 0.99


def test_unknown_loss():
    with pytest.raises(ValueError, match="choose from"):
        adversarial_loss("bce")


# --- reconstruction, cycle, identity and feature terms -------------------------------------------------------
def test_reconstruction_terms_match_torch_losses():
    g = torch.Generator().manual_seed(0)
    out, target = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    torch.testing.assert_close(reconstruction_loss("l1", out, target), F.l1_loss(out, target))
    torch.testing.assert_close(reconstruction_loss("l2", out, target), F.mse_loss(out, target))
    assert float(reconstruction_loss("l1", target, target)) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_loss("l1", out, target[:2])
    with pytest.raises(ValueError, match="choose from"):
        reconstruction_loss("huber", out, target)


def test_feature_loss_compares_features_and_never_trains_through_the_target():
    torch.manual_seed(0)
    phi = nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    out = torch.randn(5, 2, 3, 3, requires_grad=True)
    target = torch.randn(5, 2, 3, 3, requires_grad=True)
    loss = feature_loss(phi, out, target)
    torch.testing.assert_close(loss, F.mse_loss(phi(out), phi(target)))
    torch.testing.assert_close(feature_loss(phi, out, target, "l1"), F.l1_loss(phi(out), phi(target)))
    loss.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0 and target.grad is None


def test_lazy_scale_is_k_every_k_updates():
    assert [lazy_scale(t, 1) for t in range(4)] == [1, 1, 1, 1]
    assert [lazy_scale(t, 4) for t in range(9)] == [4, 0, 0, 0, 4, 0, 0, 0, 4]
    assert sum(lazy_scale(t, 16) for t in range(160)) == 160            # the same total weight as every step
    with pytest.raises(ValueError, match=">= 1"):
        lazy_scale(0, 0)


# --- regularizers ---------------------------------------------------------------------------------------
class LinearCritic(nn.Module):
    """f(x) = <w, x>: its input gradient is w for every sample."""

    def __init__(self, shape, norm):
        super().__init__()
        w = torch.randn(shape)
        self.w = nn.Parameter(w / w.norm() * norm)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


@pytest.mark.parametrize("norm, expected", [(1.0, 0.0), (2.0, 1.0), (3.0, 4.0)])
def test_gradient_penalty_of_linear_critic(norm, expected):
    torch.manual_seed(0)
    critic = LinearCritic((1, 6, 6), norm)      # the norm runs over C, H and W together
    real, fake = torch.randn(8, 1, 6, 6), torch.randn(8, 1, 6, 6)
    assert float(gradient_penalty(critic, real, fake).detach()) == pytest.approx(expected, abs=1e-4)
    assert float(r1_penalty(critic, real).detach()) == pytest.approx(norm ** 2, rel=1e-5)


def test_gradient_penalty_matches_per_sample_reference_and_trains_the_critic():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 16), nn.Tanh(), nn.Linear(16, 1))
    real, fake = torch.randn(5, 2, 4, 4), torch.randn(5, 2, 4, 4)
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(7))
    x_hat = interpolate(real, fake, torch.Generator().manual_seed(7))
    ref = []
    for i in range(5):                       # one sample at a time
        xi = x_hat[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(critic(xi).sum(), xi)
        ref.append((gi.norm() - 1) ** 2)
    torch.testing.assert_close(gp, torch.stack(ref).mean(), rtol=1e-5, atol=1e-7)
    gp.backward()                            # double backprop reaches the critic's weights
    assert critic[1].weight.grad is not None and critic[1].weight.grad.abs().sum() > 0


def test_interpolation_uses_one_coefficient_per_sample():
    real, fake = torch.ones(6, 3, 4, 4), torch.zeros(6, 3, 4, 4)
    x_hat = interpolate(real, fake, torch.Generator().manual_seed(0))
    eps = x_hat.flatten(1)
    assert torch.allclose(eps, eps[:, :1].expand_as(eps))           # constant within a sample
    assert eps[:, 0].unique().numel() == 6 and (eps >= 0).all() and (eps <= 1).all()
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate(real, fake[:3])


def test_r1_is_zero_for_a_constant_critic():
    critic = LinearCritic((1, 4, 4), 1.0)
    with torch.no_grad():
        critic.w.zero_()
    assert float(r1_penalty(critic, torch.randn(4, 1, 4, 4)).detach()) == 0.0


def test_clip_weights():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 1))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(10)
    clip_weights(m, 0.01)
    assert all(float(p.detach().abs().max()) <= 0.01 for p in m.parameters())
    with pytest.raises(ValueError, match="positive"):
        clip_weights(m, 0.0)
