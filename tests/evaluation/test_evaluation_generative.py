"""evaluate_images: the protocol, floor and ceiling, sensitivity to bad generators, caching, bad input; the
extractor by name (same numbers as the evaluator used directly), a config section, other image formats."""

import pytest
import torch

from learnloop.errors import UserError
from learnloop.evaluation import evaluate_images, format_report
from learnloop.evaluation import generative as E

N = 300
KEYS = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "density", "coverage")


@pytest.fixture(scope="module")
def train():
    from learnloop.data.vision import load_fashion_mnist

    return load_fashion_mnist("train")


@pytest.fixture(scope="module")
def real_result(train):
    # "generated" = real train images the floor does not use (the floor draws its own seeded subset)
    return evaluate_images(train.images[-N:], real_split="test", k=5, seed=0, splits=5)


def test_result_has_every_metric_protocol_floor_and_ceiling(real_result, needs_fashion):
    r = real_result
    for key in KEYS:
        assert isinstance(r[key], float)
        assert isinstance(r["floor"][key], float) and isinstance(r["ceiling"][key], float)
    p = r["protocol"]
    assert p["n_fake"] == N and p["n_real"] == N and p["n_real_fid"] == 10000
    assert (p["reference_split"], p["k"], p["splits"], p["seed"]) == ("test", 5, 5, 0)
    assert "fashion-evaluator" in p["extractor"]
    assert len(r["class_hist"]) == 10 and sum(r["class_hist"]) == pytest.approx(1.0, abs=1e-5)


def test_real_images_score_like_the_floor_and_far_from_noise(real_result, needs_fashion):
    r, floor, ceiling = real_result, real_result["floor"], real_result["ceiling"]
    assert r["fid"] < 2 * floor["fid"] + 1 and ceiling["fid"] > 20 * floor["fid"]
    assert ceiling["kid_mean"] > 30 * max(abs(floor["kid_mean"]), abs(r["kid_mean"]))
    assert r["recall"] > 0.8 and r["coverage"] > 0.8
    assert ceiling["recall"] < 0.05 and ceiling["coverage"] < 0.1
    # k-NN precision alone is fooled by noise (it lands in the wide balls of atypical real images); density
    # discounts that and recall/coverage expose it
    assert ceiling["density"] < 0.8 * floor["density"]
    assert r["is_mean"] > 3 and ceiling["is_mean"] < 1.5
    assert max(r["class_hist"]) < 0.25                              # real data: every class present


def test_mode_collapse_shows_in_recall_coverage_and_class_histogram(train, needs_fashion):
    one_class = train.images[train.labels == 7][:N]                # "generator" that only makes sneakers
    r = evaluate_images(one_class, k=5, splits=5, with_floor=False, with_ceiling=False)
    assert r["floor"] is None and r["ceiling"] is None
    assert r["class_hist"][7] > 0.9
    assert r["recall"] < 0.3 and r["coverage"] < 0.2 and r["is_mean"] < 1.5
    assert r["precision"] > 0.8                                      # what it makes is realistic


def test_floor_and_ceiling_are_cached_per_protocol(train, needs_fashion, real_result):
    before = E._cached_reference_row.cache_info().hits
    again = evaluate_images(train.images[-N:].float() / 255, k=5, seed=0, splits=5)
    assert E._cached_reference_row.cache_info().hits == before + 2
    assert again["floor"] == real_result["floor"]
    for key in KEYS:                                                  # float input == uint8 input
        assert again[key] == pytest.approx(real_result[key], rel=1e-4, abs=1e-6)


def test_format_report_puts_floor_and_ceiling_beside_the_value(real_result, needs_fashion):
    text = format_report(real_result)
    assert "floor (real)" in text and "ceiling (noise)" in text and "model" in text
    assert f"{real_result['fid']:.4g}" in text and f"{real_result['ceiling']['fid']:.4g}" in text
    assert "N fake 300" in text and "k 5" in text and "seed 0" in text


def test_bad_input(train, needs_fashion):
    imgs = train.images[:10]
    with pytest.raises(UserError, match="at least 2"):
        evaluate_images(imgs[:1])
    with pytest.raises(UserError, match="NaN"):
        evaluate_images(torch.full((4, 1, 28, 28), float("nan")), k=1, splits=1)
    with pytest.raises(UserError, match="shape"):
        evaluate_images(torch.zeros(4, 1, 1, 28, 28, dtype=torch.uint8), k=1, splits=1)
    with pytest.raises(UserError, match="2 channels"):               # RGB converts (luma), 2 channels do not
        evaluate_images(torch.zeros(4, 2, 28, 28, dtype=torch.uint8), k=1, splits=1)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        evaluate_images(torch.full((4, 1, 28, 28), -0.5), k=1, splits=1)
    with pytest.raises(UserError, match="split"):
        evaluate_images(imgs, real_split="val")
    with pytest.raises(UserError, match="k must be"):
        evaluate_images(imgs, k=10, splits=1)
    with pytest.raises(UserError, match="n must be"):
        evaluate_images(imgs, n=11, k=1, splits=1)
    with pytest.raises(UserError, match="extractor"):
        evaluate_images(imgs, extractor="nope", k=1, splits=1)


# --- the extractor by name, bit-for-bit; the config section; other formats and extractors -----------------
def test_results_are_those_of_the_evaluator_used_directly(train, real_result, needs_fashion):
    """The registry and the resize rule change nothing for 28x28 grey images with the fashion extractor."""
    from learnloop.metrics.generative import FeatureStats, fid_from_stats, kid, prdc
    from learnloop.models.evaluator import load_fashion_evaluator, reference_stats

    model = load_fashion_evaluator()
    fake_f, fake_p = model.features_and_probs(train.images[-N:])
    test = E._split_images("test")
    real_f, _ = model.features_and_probs(test[E._subset(len(test), N, 0)])
    mu, sigma = reference_stats("test")
    assert real_result["fid"] == fid_from_stats(mu, sigma, *FeatureStats().update(fake_f).stats())
    assert (real_result["kid_mean"], real_result["kid_std"]) == kid(real_f, fake_f, 100, 1000, seed=0)
    for key, value in prdc(real_f, fake_f, 5).items():
        assert real_result[key] == value
    # an evaluator object is used as is (not cached) and, as before the registry, its FID statistics are
    # computed from the test split rather than read from the shipped file: the same up to round-off
    direct = evaluate_images(train.images[-N:], k=5, seed=0, splits=5, extractor=model, with_floor=False)
    for key in KEYS:
        if key == "fid":
            assert direct[key] == pytest.approx(real_result[key], rel=1e-5)
        else:
            assert direct[key] == real_result[key] and direct["ceiling"][key] == real_result["ceiling"][key]


def test_fid_to_reference_is_the_gan_monitors_formula(train, needs_fashion):
    from learnloop.metrics.generative import feature_stats, fid_from_stats
    from learnloop.models.evaluator import load_fashion_evaluator, reference_stats

    images = train.images[:200]
    expected = fid_from_stats(*reference_stats("test"), *feature_stats(load_fashion_evaluator().features(images)))
    assert E.fid_to_reference(images) == expected
    mu, sigma = E.reference_statistics("test")
    assert torch.equal(mu, reference_stats("test")[0]) and torch.equal(sigma, reference_stats("test")[1])
    assert E.fid_to_reference(images.float() / 127.5 - 1, value_range=(-1, 1)) == pytest.approx(expected, rel=1e-4)
    with pytest.raises(UserError, match="at least 2"):
        E.fid_to_reference(images[:1])


def test_config_section_gives_the_same_result(train, real_result, needs_fashion):
    from learnloop.recipes.config import apply_overrides

    cfg = apply_overrides(E.GenerativeEvalConfig(), {"samples": N, "k": 5, "splits": 5})
    assert cfg.extractor == "fashion" and cfg.reference == "test"
    assert E.load_extractor(cfg) is E.get_extractor("fashion")
    r = E.evaluate_generated(train.images[-N:], cfg, seed=0)
    assert {k: r[k] for k in KEYS} == {k: real_result[k] for k in KEYS} and r["floor"] == real_result["floor"]
    with pytest.raises(UserError, match="weights=PATH"):
        E.load_extractor(E.GenerativeEvalConfig(extractor="inception-v3"))
    with pytest.raises(UserError, match="known: .*fashion"):
        E.load_extractor(E.GenerativeEvalConfig(extractor="nope"))


def test_a_64px_rgb_tanh_generator_is_scored_by_a_headless_extractor(train, needs_fashion):
    """Any format in, any extractor: without a classifier head there is no Inception Score."""
    from torch import nn

    from learnloop.evaluation import ImageSpec, ModuleExtractor, register_extractor

    def factory():
        torch.manual_seed(0)
        body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten())
        return ModuleExtractor(body, ImageSpec(3, (32, 32), (-1.0, 1.0)), name="tiny-headless")

    register_extractor("test-headless", factory, replace=True)
    real = train.images[-200:].float() / 255
    fake = torch.nn.functional.interpolate(real, size=(64, 64), mode="bilinear", align_corners=False)
    fake = fake.expand(-1, 3, -1, -1) * 2 - 1                                     # (N, 3, 64, 64) in [-1, 1]
    r = evaluate_images(fake, k=3, splits=2, extractor="test-headless", value_range=(-1, 1))
    assert r["is_mean"] is None and r["class_hist"] is None and r["floor"]["is_std"] is None
    assert r["fid"] < 0.5 * r["ceiling"]["fid"] and r["recall"] > r["ceiling"]["recall"]
    p = r["protocol"]
    assert (p["extractor"], p["extractor_input"], p["fake_input"]) == \
        ("tiny-headless", "3x32x32 in [-1, 1]", "float in [-1, 1] 3x64x64")
    text = format_report(r)
    assert "input 3x32x32 in [-1, 1]" in text and "fake images float in [-1, 1] 3x64x64" in text
    assert "class histogram" not in text
    assert [line for line in text.splitlines() if line.startswith("Inception Score")][0].split()[-3:] == \
        ["-", "-", "-"]
    with pytest.raises(UserError, match="no classifier"):
        E.get_extractor("test-headless").probs(fake[:2], value_range=(-1, 1))
