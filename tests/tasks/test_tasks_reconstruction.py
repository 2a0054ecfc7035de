"""Corruptions, baselines, the KL warm-up and the importance-weighted bounds of learnloop.tasks.reconstruction."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from learnloop.errors import UserError
from learnloop.losses.vae import log_importance_weights, reparameterize
from learnloop.models.autoencoder import VAE, Autoencoder
from learnloop.tasks.reconstruction import (
    Corruption, Reconstruction, VariationalAutoencoding, blur_fill, gaussian_noise, importance_weighted,
    mean_fill, pca_basis, pca_reconstruct, rectangle_masks,
)


def test_gaussian_noise_is_clipped_and_has_the_std():
    x = torch.full((200, 1, 28, 28), 0.5)
    y = gaussian_noise(x, 0.1, torch.Generator().manual_seed(0))
    assert float((y - x).std()) == pytest.approx(0.1, rel=0.02)
    z = gaussian_noise(x, 2.0, torch.Generator().manual_seed(0))
    assert z.min() == 0 and z.max() == 1                                     # clipped to [0, 1]


def test_rectangle_masks_sizes_and_positions():
    g = torch.Generator().manual_seed(1)
    m = rectangle_masks(500, 28, 20, 3, 9, generator=g)
    assert m.shape == (500, 1, 28, 20) and set(m.unique().tolist()) <= {0.0, 1.0}
    rows, cols = m[:, 0].amax(2), m[:, 0].amax(1)
    heights, widths = rows.sum(1), cols.sum(1)
    assert heights.min() == 3 and heights.max() == 9 and widths.min() == 3 and widths.max() == 9
    assert torch.equal(m[:, 0].sum((1, 2)), heights * widths)               # one solid rectangle
    assert rows[:, 0].any() and rows[:, -1].any() and cols[:, 0].any() and cols[:, -1].any()   # reaches edges
    two = rectangle_masks(100, 28, 28, 2, 4, count=2, generator=g)
    assert float(two.sum((1, 2, 3)).max()) <= 32 and float(two.sum((1, 2, 3)).min()) >= 4
    with pytest.raises(UserError, match="mask sizes"):
        rectangle_masks(1, 10, 10, 4, 11)


def test_corruptions_make_inputs_targets_masks():
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    inputs, targets, masks = Corruption("none")(x)
    assert inputs is x and targets is x and torch.equal(masks, torch.ones(4, 1, 28, 28))
    inputs, targets, masks = Corruption("rectangles", mask_size=(5, 5))(x, torch.Generator().manual_seed(0))
    assert torch.equal(targets, x) and torch.equal(inputs, x * (1 - masks)) and masks.sum() == 4 * 25
    inputs, targets, _ = Corruption("binarize")(x, torch.Generator().manual_seed(0))
    assert inputs is targets and set(targets.unique().tolist()) == {0.0, 1.0}
    a = Corruption("noise", noise_std=0.3)(x, torch.Generator().manual_seed(9))[0]
    b = Corruption("noise", noise_std=0.3)(x, torch.Generator().manual_seed(9))[0]
    assert torch.equal(a, b) and not torch.equal(a, x)                       # seeded
    with pytest.raises(UserError, match="corruption must be"):
        Corruption("jpeg")


def test_fills_keep_visible_pixels_and_restore_smooth_images():
    x = torch.full((2, 1, 28, 28), 0.4)
    mask = rectangle_masks(2, 28, 28, 6, 10, generator=torch.Generator().manual_seed(3))
    mean = torch.full((1, 28, 28), 0.9)
    blurred = blur_fill(x * (1 - mask), mask, 2.0, mean)
    assert torch.allclose(blurred, x, atol=1e-6)                             # a constant image comes back
    filled = mean_fill(x * (1 - mask), mask, mean)
    assert torch.allclose(filled[mask.bool()], torch.tensor(0.9)) and torch.equal(filled[~mask.bool()], x[~mask.bool()])
    everything = torch.ones(1, 1, 28, 28)                                    # nothing visible: the mean image
    assert torch.allclose(blur_fill(torch.zeros(1, 1, 28, 28), everything, 1.0, mean), mean.unsqueeze(0))


def test_pca_reconstruction_matches_scikit_learn():
    g = torch.Generator().manual_seed(4)
    basis = torch.randn(3, 64, generator=g)
    x = (torch.rand(300, 3, generator=g) @ basis / 8 + 0.5 + 0.01 * torch.randn(300, 64, generator=g)).clamp(0, 1)
    x = x.view(300, 1, 8, 8)
    mean, directions = pca_basis(x[:200], 3)
    got = pca_reconstruct(x[200:], mean, directions)
    pca = PCA(3).fit(x[:200].flatten(1).double().numpy())
    want = np.clip(pca.inverse_transform(pca.transform(x[200:].flatten(1).double().numpy())), 0, 1)
    np.testing.assert_allclose(got.flatten(1).numpy(), want, atol=1e-5)
    assert pca_basis(x, 0)[1].shape == (64, 0)


def test_kl_weight_warms_up_linearly_in_epochs():
    task = VariationalAutoencoding(VAE(width=4, latent_dim=2), beta=0.5, warmup_epochs=2.0)
    learner = SimpleNamespace(train_loader=range(10), accumulate=1, step=0)
    weights = []
    for step in (0, 5, 10, 20, 40):
        learner.step = step
        weights.append(task.kl_weight(learner))
    assert weights == [0.0, 0.125, 0.25, 0.5, 0.5]
    learner.accumulate, learner.step = 2, 5                                  # 5 optimizer steps per epoch
    assert task.kl_weight(learner) == 0.25
    assert VariationalAutoencoding(VAE(width=4, latent_dim=2), beta=2.0).kl_weight(learner) == 2.0   # no warm-up


def test_vae_steps_report_the_terms_separately():
    torch.manual_seed(0)
    task = VariationalAutoencoding(VAE(width=4, latent_dim=3), beta=1.0, warmup_epochs=1.0)
    x = torch.rand(6, 1, 28, 28)
    batch = (x, x, torch.ones(6, 1, 28, 28))
    learner = SimpleNamespace(train_loader=range(4), accumulate=1, step=2)
    out = task.training_step(batch, learner)
    assert out["kl_weight"] == 0.5
    assert float(out["loss"].detach()) == pytest.approx(float(out["recon"] + 0.5 * out["kl"]), rel=1e-5)
    assert float(out["elbo"]) == pytest.approx(-float(out["recon"] + out["kl"]), rel=1e-5)
    val = task.validation_step(batch, learner)                               # full weight in validation
    assert float(val["loss"]) == pytest.approx(float(val["recon"] + val["kl"]), rel=1e-5)
    assert out["recon"] > 0 and out["kl"] >= 0


def test_reconstruction_task_loss_and_inpainting_composite():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 28, 28)
    mask = rectangle_masks(3, 28, 28, 5, 8, generator=torch.Generator().manual_seed(0))
    task = Reconstruction(Autoencoder(width=4, in_channels=2), loss="mse", mask_channel=True, keep_visible=True)
    out = task.reconstruct(x * (1 - mask), mask)
    assert torch.equal(out[~mask.bool()], (x * (1 - mask))[~mask.bool()])   # visible pixels kept
    step = task.training_step((x * (1 - mask), x, mask), None)
    pred = torch.sigmoid(task.logits(x * (1 - mask), mask)).detach()
    assert float(step["loss"].detach()) == pytest.approx(float(((pred - x) ** 2).mean()), rel=1e-5)
    with pytest.raises(UserError, match="loss must be"):
        Reconstruction(Autoencoder(width=4), loss="l1")


def test_importance_weighted_bounds():
    torch.manual_seed(0)
    vae = VAE(width=4, latent_dim=3).double()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    elbo, iwae = importance_weighted(vae, x, 1, torch.Generator().manual_seed(3))
    mu, logvar = vae.encode(x)
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(3))
    want = log_importance_weights(vae.decode_logits(z), x, z, mu, logvar)
    torch.testing.assert_close(elbo, want)
    torch.testing.assert_close(iwae, want)                                   # k = 1: the same number
    elbo, iwae = importance_weighted(vae, x, 20, torch.Generator().manual_seed(3), chunk=30)   # chunked
    assert (iwae >= elbo).all() and elbo.shape == (5,)
    assert math.isfinite(float(iwae.sum()))
    with pytest.raises(UserError, match="k >= 1"):
        importance_weighted(vae, x, 0)
