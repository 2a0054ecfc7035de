"""MSE, PSNR, SSIM and the Gaussian filter of learnloop.metrics.image.

scikit-image is not installed in this environment, so SSIM is checked against a direct NumPy/SciPy
implementation of skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=L) written below from its published algorithm (scipy.ndimage's
gaussian_filter with truncate 3.5, 5-pixel border cropped before the mean), against values pinned by hand
(constant images, where every local variance is zero), and, when scikit-image is importable, against it.
"""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from learnloop.metrics.image import gaussian_blur, gaussian_window, mse, psnr, ssim


def ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """skimage's algorithm for one grey image, Gaussian weights, population covariances."""
    def filt(a):
        return ndimage.gaussian_filter(a, sigma=1.5, truncate=3.5, mode="reflect")

    x, y = x.astype(np.float64), y.astype(np.float64)
    ux, uy = filt(x), filt(y)
    vx, vy, vxy = filt(x * x) - ux * ux, filt(y * y) - uy * uy, filt(x * y) - ux * uy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = 5
    return float(s[pad:-pad, pad:-pad].mean())


@pytest.fixture
def pairs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g)
    y = (x + 0.2 * torch.randn(6, 1, 28, 28, generator=g)).clamp(0, 1)
    y[1] = 1 - x[1]                                    # anti-correlated
    y[2] = torch.roll(x[2], 3, dims=-1)                # shifted
    return x, y


def test_ssim_matches_the_reference_algorithm(pairs):
    x, y = pairs
    got = ssim(x, y)
    want = [ssim_reference(a[0].numpy(), b[0].numpy()) for a, b in zip(x, y)]
    assert got.shape == (6,)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)


def test_ssim_against_scikit_image_when_installed(pairs):
    metrics = pytest.importorskip("skimage.metrics")
    x, y = pairs
    for a, b, s in zip(x, y, ssim(x, y)):
        want = metrics.structural_similarity(a[0].numpy().astype(np.float64), b[0].numpy().astype(np.float64),
                                             data_range=1.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
        assert float(s) == pytest.approx(want, abs=1e-8)


def test_ssim_of_constant_images_is_the_luminance_term_pinned_by_hand():
    # constant a and b: every local variance and covariance is 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.2, 0.6
    c1 = (0.01 * 1.0) ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)                  # = 0.24010 / 0.40010 = 0.600100
    got = ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))
    assert float(got) == pytest.approx(want, abs=1e-7) and want == pytest.approx(0.6000999750, abs=1e-9)


def test_ssim_properties(pairs):
    x, y = pairs
    assert torch.allclose(ssim(x, x), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(ssim(x, y), ssim(y, x))                      # symmetric
    assert torch.allclose(ssim(255 * x, 255 * y, data_range=255), ssim(x, y))   # scale with L
    s = ssim(x, y)
    assert s[1] < 0 < s[0] < 1                                         # anti-correlated is negative
    rgb = ssim(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1))             # channels averaged
    assert torch.allclose(rgb, s)
    assert ssim(x[:, 0], y[:, 0]).shape == (6,)                        # (N, H, W) accepted


def test_ssim_edge_cases():
    with pytest.raises(ValueError, match="at least that size"):
        ssim(torch.rand(2, 1, 10, 28), torch.rand(2, 1, 10, 28))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(torch.rand(2, 1, 28, 28), torch.rand(3, 1, 28, 28))
    assert ssim(torch.rand(1, 1, 11, 11), torch.rand(1, 1, 11, 11)).shape == (1,)   # one window position


def test_psnr_and_mse_by_hand():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.full((2, 1, 4, 4), 0.1)
    y[1, :, :2] = 0.0                                       # half the pixels exact: MSE 0.005
    np.testing.assert_allclose(mse(x, y).numpy(), [0.01, 0.005], rtol=1e-6)
    np.testing.assert_allclose(psnr(x, y).numpy(), [20.0, 10 * math.log10(200)], rtol=1e-6)
    assert float(psnr(255 * x, 255 * y, data_range=255)[0]) == pytest.approx(20.0)
    assert float(psnr(x, x)[0]) == pytest.approx(100.0)      # MSE floored: finite
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, 2:] = 1                                      # the bottom half only
    np.testing.assert_allclose(mse(x, y, mask).numpy(), [0.01, 0.01], rtol=1e-6)
    assert math.isnan(float(mse(x, y, torch.zeros_like(mask))[0]))   # nothing counted


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5, 3.0])
def test_gaussian_blur_matches_scipy(sigma):
    x = torch.rand(3, 2, 20, 17, generator=torch.Generator().manual_seed(1))
    got = gaussian_blur(x, sigma)
    want = ndimage.gaussian_filter(x.numpy().astype(np.float64), sigma=(0, 0, sigma, sigma), mode="reflect")
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    zeros = gaussian_blur(x.double(), sigma, padding="zeros")
    want = ndimage.gaussian_filter(x.numpy().astype(np.float64), sigma=(0, 0, sigma, sigma), mode="constant")
    np.testing.assert_allclose(zeros.numpy(), want, atol=1e-12)


def test_gaussian_window_is_scipys_kernel():
    w = gaussian_window(1.5, 5)
    assert len(w) == 11 and float(w.sum()) == pytest.approx(1.0)
    t = np.arange(-5, 6)
    want = np.exp(-0.5 * t ** 2 / 1.5 ** 2)
    np.testing.assert_allclose(w.numpy(), want / want.sum(), rtol=1e-12)
    with pytest.raises(ValueError):
        gaussian_window(0.0, 3)
