"""The shipped Fashion-MNIST evaluator: accuracy, features/probabilities, reference statistics, bad input."""

import pytest
import torch

from learnloop.errors import CorruptFileError, UserError
from learnloop.metrics.generative import feature_stats
from learnloop.models.evaluator import (
    FashionEvaluator,
    assets_dir,
    evaluator_card,
    load_fashion_evaluator,
    reference_stats,
)


@pytest.fixture(scope="module")
def evaluator():
    return load_fashion_evaluator()


@pytest.fixture(scope="module")
def test_set():
    from learnloop.data.vision import load_fashion_mnist

    return load_fashion_mnist("test")


def test_assets_are_small_and_the_card_records_how_they_were_made():
    total = sum(p.stat().st_size for p in assets_dir().glob("fashion_evaluator*"))
    assert total < 5 * 2**20
    card = evaluator_card()
    assert card["feature_dim"] == 256 and "train_evaluator.py" in card["command"]


def test_shipped_evaluator_reaches_the_target_accuracy():
    assert evaluator_card()["test_accuracy"] >= 0.93              # measured on all 10,000 test images


def test_loaded_in_eval_mode_without_gradients(evaluator):
    assert isinstance(evaluator, FashionEvaluator) and not evaluator.training
    assert not any(p.requires_grad for p in evaluator.parameters())


def test_accuracy_and_output_shapes_on_test_images(evaluator, needs_fashion, test_set):
    images, labels = test_set.images[:2000], test_set.labels[:2000]
    probs = evaluator.probs(images)
    feats = evaluator.features(images)
    assert probs.shape == (2000, 10) and feats.shape == (2000, evaluator.feature_dim)
    torch.testing.assert_close(probs.sum(1), torch.ones(2000), atol=1e-5, rtol=0)
    assert (probs.argmax(1) == labels).float().mean() > 0.92


def test_uint8_float_and_batching_agree(evaluator, needs_fashion, test_set):
    images = test_set.images[:37]
    a = evaluator.features(images)
    b = evaluator.features(images.float() / 255)
    c = evaluator.features(images[:, 0])                           # (N, 28, 28) is accepted too
    small = FashionEvaluator(batch_size=5)
    small.load_state_dict(evaluator.state_dict())
    d = small.features(images)
    for other in (b, c, d):
        torch.testing.assert_close(a, other, atol=1e-4, rtol=1e-4)
    f2, p2 = evaluator.features_and_probs(images)
    torch.testing.assert_close(f2, a)
    torch.testing.assert_close(p2, evaluator.probs(images))


def test_reference_stats_are_the_test_set_feature_statistics(evaluator, needs_fashion, test_set):
    mu, sigma = reference_stats("test")
    assert mu.dtype == torch.float64 and sigma.shape == (evaluator.feature_dim,) * 2
    mu2, sigma2 = feature_stats(evaluator.features(test_set.images))
    torch.testing.assert_close(mu, mu2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sigma, sigma2, rtol=1e-3, atol=1e-3)
    mu_train, _ = reference_stats("train")
    assert mu_train.shape == mu.shape and not torch.equal(mu_train, mu)


def test_bad_input(evaluator, tmp_path):
    with pytest.raises(UserError, match="shape"):
        evaluator.features(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        evaluator.features(torch.full((2, 1, 28, 28), 2.0))
    with pytest.raises(UserError, match="NaN"):
        evaluator.probs(torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(UserError, match="split"):
        reference_stats("val")
    with pytest.raises(UserError, match="missing"):
        load_fashion_evaluator(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 32)
    with pytest.raises(CorruptFileError):
        load_fashion_evaluator(bad)
