"""evaluate_images: the protocol, floor and ceiling, sensitivity to bad generators, caching, bad input."""

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
    before = E._fashion_reference_row.cache_info().hits
    again = evaluate_images(train.images[-N:].float() / 255, k=5, seed=0, splits=5)
    assert E._fashion_reference_row.cache_info().hits == before + 2
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
        evaluate_images(torch.zeros(4, 3, 28, 28, dtype=torch.uint8), k=1, splits=1)
    with pytest.raises(UserError, match="split"):
        evaluate_images(imgs, real_split="val")
    with pytest.raises(UserError, match="k must be"):
        evaluate_images(imgs, k=10, splits=1)
    with pytest.raises(UserError, match="n must be"):
        evaluate_images(imgs, n=11, k=1, splits=1)
    with pytest.raises(UserError, match="extractor"):
        evaluate_images(imgs, extractor="nope", k=1, splits=1)
