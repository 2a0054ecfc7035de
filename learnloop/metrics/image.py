"""Image-quality metrics of reconstructions, per image: MSE, PSNR and SSIM (Wang et al., 2004), and the
separable Gaussian filter the SSIM window and the blur baselines use.

Images are float tensors (N, C, H, W) (or (N, H, W)) with values in [0, L], L = `data_range` (1 for images
in [0, 1]); `x` is the reference, `y` the estimate. Every function returns one value per image, shape (N,),
computed in float64.

- MSE_i = mean over (c, h, w) of (x - y)^2; with a mask m (1 = counted, broadcast over channels) the mean
  over the counted pixels only (NaN for an image with none).
- PSNR_i = 10 log10(L^2 / MSE_i) dB, with MSE_i floored at 1e-10 L^2 (identical images: 100 dB, not inf).
- SSIM, structural similarity (Wang, Bovik, Sheikh & Simoncelli, 2004, eq. 13, with the Gaussian-weighted
  statistics of their sec. III-C, eqs. 14-16): with mu, sigma^2 and sigma_xy the local means, variances and covariance under an
  11 x 11 Gaussian window w (standard deviation 1.5, weights summing to 1),

      SSIM(p) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
      C1 = (K1 L)^2,  C2 = (K2 L)^2,  K1 = 0.01,  K2 = 0.03,

  sigma_x^2 = E_w[x^2] - mu_x^2 (the window-weighted, "population" moment), and SSIM_i is the mean of the
  map over every position where the window fits inside the image ('valid' filtering: 18 x 18 positions of a
  28 x 28 image) and over channels (the MSSIM of eq. 17). This is what
  `skimage.metrics.structural_similarity(x, y, data_range=L, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)` computes: it filters with scipy.ndimage.gaussian_filter (truncate 3.5,
  i.e. radius int(3.5 * 1.5 + 0.5) = 5) and crops the 5-pixel border, where the filter saw padding, before
  averaging.
- gaussian_blur(x, sigma): the same Gaussian, radius int(truncate * sigma + 0.5) (truncate 4, scipy's
  default), applied along H then W with half-sample symmetric padding (scipy.ndimage's mode "reflect":
  d c b a | a b c d | d c b a), so the output has the input's size; `padding="zeros"` pads with zeros
  instead (what normalised convolution needs, see learnloop.tasks.reconstruction.blur_fill).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

K1, K2 = 0.01, 0.03
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
MSE_FLOOR = 1e-10


def _images(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"{name} must be images (N, C, H, W) or (N, H, W), got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _images(x, "x"), _images(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y


def mse(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image mean squared error (N,); with `mask` (N, 1 or C, H, W), over the pixels where mask = 1."""
    x, y = _pair(x, y)
    sq = (x - y) ** 2
    if mask is None:
        return sq.flatten(1).mean(1)
    m = _images(mask, "mask").expand_as(sq)
    return (sq * m).flatten(1).sum(1) / m.flatten(1).sum(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio in dB (N,): 10 log10(L^2 / MSE), MSE floored at 1e-10 L^2."""
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    e = mse(x, y, mask)
    return 10 * torch.log10(data_range ** 2 / e.clamp_min(MSE_FLOOR * data_range ** 2))


def gaussian_window(sigma: float, radius: int) -> torch.Tensor:
    """The normalised 1-D Gaussian of `sigma` at offsets -radius..radius (float64), as scipy.ndimage uses."""
    if not sigma > 0 or radius < 0:
        raise ValueError(f"need sigma > 0 and radius >= 0, got sigma={sigma}, radius={radius}")
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable filtering of (N, C, H, W) by `window` along H and W, only where it fits ('valid')."""
    n, c, h, w = x.shape
    k = len(window)
    flat = x.reshape(n * c, 1, h, w)
    flat = F.conv2d(flat, window.to(x).view(1, 1, k, 1))
    flat = F.conv2d(flat, window.to(x).view(1, 1, 1, k))
    return flat.reshape(n, c, h - k + 1, w - k + 1)


def _symmetric_index(n: int, radius: int) -> torch.Tensor:
    """Indices of a length-n axis padded by `radius` on both sides, half-sample symmetric (d c b a | a b c d)."""
    i = torch.arange(-radius, n + radius)
    period = 2 * n
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - 1 - i, i)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0, padding: str = "reflect") -> torch.Tensor:
    """Gaussian filtering of images (N, C, H, W) with standard deviation `sigma` pixels, output of the same
    size and dtype; `padding` "reflect" (scipy.ndimage.gaussian_filter's default mode) or "zeros"."""
    if padding not in ("reflect", "zeros"):
        raise ValueError(f"padding must be 'reflect' or 'zeros', got {padding!r}")
    dtype = x.dtype
    x = _images(x, "x")
    radius = int(truncate * sigma + 0.5)
    window = gaussian_window(sigma, radius)
    if radius == 0:
        return x.to(dtype)
    h, w = x.shape[-2:]
    if padding == "zeros":
        padded = F.pad(x, (radius, radius, radius, radius))
    else:
        padded = x.index_select(2, _symmetric_index(h, radius)).index_select(3, _symmetric_index(w, radius))
    return _filter_valid(padded, window).to(dtype)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA, k1: float = K1, k2: float = K2) -> torch.Tensor:
    """Per-image SSIM (N,) of Wang et al. (2004) with a `win_size` Gaussian window (module docstring)."""
    x, y = _pair(x, y)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 1, got {win_size}")
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"SSIM with a {win_size}x{win_size} window needs images of at least that size, "
                         f"got {x.shape[-2]}x{x.shape[-1]}")
    window = gaussian_window(sigma, (win_size - 1) // 2)
    stacked = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, xx, yy, xy = stacked.chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)
