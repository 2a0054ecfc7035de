"""Shapes and contracts of the convolutional autoencoder and the VAE (learnloop.models.autoencoder)."""

import pytest
import torch

from learnloop.errors import UserError
from learnloop.models.autoencoder import VAE, Autoencoder


@pytest.mark.parametrize("latent, kwargs, shape", [("vector", dict(latent_dim=7), (7,)),
                                                    ("spatial", dict(latent_channels=4), (4, 7, 7))])
def test_autoencoder_shapes(latent, kwargs, shape):
    ae = Autoencoder((1, 28, 28), width=8, latent=latent, **kwargs)
    x = torch.rand(3, 1, 28, 28)
    z = ae.encode(x)
    assert ae.latent_shape == shape and z.shape == (3, *shape)
    logits = ae(x)
    assert logits.shape == x.shape
    y = ae.decode(z)
    assert torch.allclose(y, torch.sigmoid(logits)) and 0 <= y.min() and y.max() <= 1


@pytest.mark.parametrize("latent, shape", [("vector", (5,)), ("spatial", (3, 8, 4))])
def test_vae_encode_decode_sample(latent, shape):
    vae = VAE((3, 32, 16), width=8, latent=latent, latent_dim=5, latent_channels=3)
    x = torch.rand(2, 3, 32, 16)
    mu, logvar = vae.encode(x)
    assert vae.latent_shape == shape and mu.shape == logvar.shape == (2, *shape)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    logits, mu2, logvar2, z = vae(x, generator=g1)
    eps = torch.randn(mu.shape, generator=g2)
    assert torch.allclose(z, mu + torch.exp(0.5 * logvar) * eps)           # z = mu + sigma * eps
    assert torch.equal(mu, mu2) and logits.shape == x.shape
    assert torch.allclose(vae.decode(z), torch.sigmoid(logits))
    s = vae.sample(4, torch.Generator().manual_seed(0))
    assert s.shape == (4, 3, 32, 16) and torch.equal(s, vae.sample(4, torch.Generator().manual_seed(0)))


def test_extra_input_channel_for_the_mask():
    ae = Autoencoder((1, 28, 28), width=8, in_channels=2)
    assert ae(torch.rand(2, 2, 28, 28)).shape == (2, 1, 28, 28)
    with pytest.raises(RuntimeError):
        ae(torch.rand(2, 1, 28, 28))


def test_bad_shapes_and_options_are_user_errors():
    with pytest.raises(UserError, match="divisible by 4"):
        Autoencoder((1, 30, 28))
    with pytest.raises(UserError, match="latent must be"):
        VAE(latent="grid")
    with pytest.raises(UserError, match=">= 1"):
        Autoencoder(latent_dim=0)


def test_weights_round_trip_through_a_state_dict():
    a, b = VAE(width=8, latent_dim=3), VAE(width=8, latent_dim=3)
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(a.encode(x)[0], b.encode(x)[0])
    with pytest.raises(RuntimeError):
        VAE(width=8, latent_dim=4).load_state_dict(a.state_dict())
