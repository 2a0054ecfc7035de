"""Generative metrics against references: scipy's sqrtm FID, the `prdc` package, direct O(n^2) KID sums."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from learnloop.errors import UserError
from learnloop.metrics import generative as G
from learnloop.metrics.generative import (
    FeatureStats,
    feature_stats,
    fid,
    fid_from_stats,
    inception_score,
    kid,
    prdc,
)


def sqrtm_fid(x: np.ndarray, y: np.ndarray) -> float:
    """pytorch-fid's formula with scipy.linalg.sqrtm (the reference)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def gaussians(seed, n1, n2, d, shift=0.5):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / math.sqrt(d) + np.eye(d)
    x = rng.normal(size=(n1, d)) @ a
    y = rng.normal(size=(n2, d)) @ (a + 0.3 * rng.normal(size=(d, d)) / math.sqrt(d)) + shift
    return x, y


# --- FID ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,n1,n2,d", [(0, 400, 300, 8), (1, 1000, 800, 32), (2, 600, 700, 64)])
def test_fid_matches_scipy_sqrtm_formula(seed, n1, n2, d):
    x, y = gaussians(seed, n1, n2, d)
    assert fid(x, y) == pytest.approx(sqrtm_fid(x, y), rel=1e-6)
    assert fid(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(
        sqrtm_fid(x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)), rel=1e-6)


def test_fid_from_stats_agrees_with_fid_and_is_symmetric():
    x, y = gaussians(3, 500, 400, 16)
    s1, s2 = feature_stats(x), feature_stats(y)
    assert fid_from_stats(*s1, *s2) == pytest.approx(fid(x, y), rel=1e-12)
    assert fid(x, y) == pytest.approx(fid(y, x), rel=1e-9)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-9)


def test_fid_closed_form_for_isotropic_gaussians():
    d = 10
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    s1, s2 = 4.0 * torch.eye(d, dtype=torch.float64), 0.25 * torch.eye(d, dtype=torch.float64)
    # ||mu1 - mu2||^2 + d (a - b)^2 with a = 2, b = 0.5
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(d * 0.25 + d * 1.5 ** 2, rel=1e-12)


def test_fid_degenerate_covariances_stay_finite_real_and_exact():
    rng = np.random.default_rng(0)
    # N < D: rank-deficient covariances
    v = fid(rng.normal(size=(10, 64)), rng.normal(size=(12, 64)))
    assert isinstance(v, float) and math.isfinite(v) and v >= 0
    # identical singular covariance, shifted means: tr sqrt(S S) = tr S, so FID = ||dmu||^2 exactly
    low = rng.normal(size=(5, 40)) * 3
    mu1, mu2 = rng.normal(size=40), rng.normal(size=40)
    s = torch.from_numpy(low.T @ low)                 # rank 5 of 40, eigenvalues up to ~ 1e3
    expected = float(((mu1 - mu2) ** 2).sum())
    assert fid_from_stats(mu1, s, mu2, s) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # constant features: zero covariance on one or both sides
    const = np.ones((20, 16))
    assert fid(const, const) == 0.0
    x = rng.normal(size=(20, 16))
    expected = float(((x.mean(0) - 1) ** 2).sum() + np.trace(np.cov(x, rowvar=False)))
    assert fid(const, x) == pytest.approx(expected)


# --- FeatureStats -------------------------------------------------------------------------------------
def test_feature_stats_streaming_equals_batch_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1003, 12)) * 50 + 1e4      # large offset: the pairwise update must stay exact
    acc = FeatureStats()
    for lo, hi in [(0, 1), (1, 100), (100, 101), (101, 640), (640, 1003)]:
        acc.update(torch.from_numpy(x[lo:hi]))
    np.testing.assert_allclose(acc.mean.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.cov.numpy(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    a, b = FeatureStats().update(x[:500]), FeatureStats().update(x[500:])
    np.testing.assert_allclose(a.merge(b).cov.numpy(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    y = rng.normal(size=(300, 12))
    assert acc.fid(FeatureStats().update(y)) == pytest.approx(fid(x, y), rel=1e-9)


def test_feature_stats_errors():
    acc = FeatureStats()
    with pytest.raises(UserError, match="empty"):
        _ = acc.mean
    acc.update(torch.randn(1, 4))
    with pytest.raises(UserError, match="at least 2"):
        _ = acc.cov
    with pytest.raises(UserError, match="dimension changed"):
        acc.update(torch.randn(3, 5))
    with pytest.raises(UserError, match="NaN"):
        acc.update(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))


# --- KID ----------------------------------------------------------------------------------------------
def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 by explicit double loops."""
    d, m, n = x.shape[1], len(x), len(y)

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_whole_sets_equals_direct_double_sum():
    x, y = gaussians(4, 40, 40, 6)
    mean, std = kid(x, y, num_subsets=7, subset_size=100)
    assert mean == pytest.approx(direct_mmd2(x, y), rel=1e-9)
    assert std == 0.0


def test_kid_subsets_equal_direct_sums_on_the_same_seeded_subsets():
    x, y = gaussians(5, 50, 45, 5)
    mean, std = kid(x, y, num_subsets=4, subset_size=20, seed=7)
    g = torch.Generator().manual_seed(7)
    values = []
    for _ in range(4):
        ix, iy = torch.randperm(50, generator=g)[:20], torch.randperm(45, generator=g)[:20]
        values.append(direct_mmd2(x[ix.numpy()], y[iy.numpy()]))
    assert mean == pytest.approx(np.mean(values), rel=1e-9)
    assert std == pytest.approx(np.std(values), rel=1e-6)
    assert kid(x, y, num_subsets=4, subset_size=20, seed=7) == (mean, std)
    assert kid(x, y, num_subsets=4, subset_size=20, seed=8) != (mean, std)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    same, same_std = kid(a, b, num_subsets=20, subset_size=200)
    shifted, _ = kid(a, b + 1.0, num_subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 10 * abs(same)


# --- Inception Score ----------------------------------------------------------------------------------
def test_inception_score_limits_and_reference_formula():
    n, c = 400, 10
    assert inception_score(torch.full((n, c), 1.0 / c), splits=4)[0] == pytest.approx(1.0)
    onehot = torch.nn.functional.one_hot(torch.arange(n) % c, c).double()
    assert inception_score(onehot, splits=1)[0] == pytest.approx(float(c))
    logits = torch.randn(n, c, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = torch.softmax(logits * 3, 1)
    mean, std = inception_score(p, splits=5, seed=3)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3)).numpy()
    scores = []
    for part in np.array_split(p.numpy()[perm], 5):
        py = part.mean(0, keepdims=True)
        scores.append(np.exp((part * (np.log(part) - np.log(py))).sum(1).mean()))
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)


# --- precision / recall / density / coverage ----------------------------------------------------------
@pytest.mark.parametrize("seed,n_real,n_fake,d,k",
                         [(0, 300, 250, 16, 5), (1, 200, 320, 8, 3), (2, 150, 150, 32, 10)])
def test_prdc_matches_reference_package(seed, n_real, n_fake, d, k, monkeypatch):
    prdc_ref = pytest.importorskip("prdc")
    monkeypatch.setattr(G, "_BLOCK_BYTES", 8 * 1000 * 7)   # a handful of rows per block: exercise blocking
    x, y = gaussians(seed, n_real, n_fake, d, shift=0.3)
    x, y = x.astype(np.float32), y.astype(np.float32)
    ours = prdc(x, y, k=k)
    ref = prdc_ref.compute_prdc(x.astype(np.float64), y.astype(np.float64), nearest_k=k)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-12), key


def test_prdc_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    same = prdc(x, rng.normal(size=(300, 4)), k=5)
    far = prdc(x, rng.normal(size=(300, 4)) + 20, k=5)
    assert same["precision"] > 0.6 and same["recall"] > 0.6 and same["coverage"] > 0.8
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


# --- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [fid, lambda a, b: kid(a, b, 2, 2), prdc])
def test_pair_metrics_reject_bad_input(fn):
    good = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(UserError, match="at least 2 samples"):
        fn(good[:1], good)
    with pytest.raises(UserError, match="at least 2 samples"):
        fn(good, good[:1])
    with pytest.raises(UserError, match="dimensions differ"):
        fn(good, good[:, :3])
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        fn(good, bad)
    with pytest.raises(UserError, match="2-d"):
        fn(good[0], good)


def test_other_bad_input():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(UserError, match="k must be"):
        prdc(x, x, k=10)
    with pytest.raises(UserError, match="at least 2"):
        feature_stats(x[:1])
    with pytest.raises(UserError, match="dimensions differ"):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(UserError, match="NaN"):
        fid_from_stats(np.zeros(3), np.full((3, 3), np.nan), np.zeros(3), np.eye(3))
    with pytest.raises(UserError, match="splits"):
        inception_score(torch.full((5, 2), 0.5), splits=6)
    with pytest.raises(UserError, match="sum to 1"):
        inception_score(torch.full((5, 2), 0.7), splits=1)
    with pytest.raises(UserError, match="NaN"):
        inception_score(torch.tensor([[0.5, float("nan")], [0.5, 0.5]]), splits=1)


def test_trace_term_cholesky_and_eigen_roots_agree():
    x, y = gaussians(8, 300, 300, 24)
    (_, s1), (_, s2) = feature_stats(x), feature_stats(y)
    root = G.sqrt_psd(s1)
    lam = torch.linalg.eigvalsh(root @ s2 @ root).clamp_min(0).sqrt().sum()
    assert G.trace_sqrt_product(s1, s2) == pytest.approx(float(lam), rel=1e-10)
    assert torch.linalg.cholesky_ex(s1)[1] == 0          # the Cholesky path was the one taken
