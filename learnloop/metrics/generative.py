"""Sample-quality metrics for generative models, as pure float64 functions of feature matrices.

All take features phi(x) from a fixed extractor (rows = images): `real_feats` (N_r, D), `fake_feats` (N_f, D).

FID, Frechet Inception Distance (Heusel et al., 2017): the Frechet (2-Wasserstein) distance between
Gaussians fitted to the two feature sets,
    FID = ||mu_1 - mu_2||^2 + tr(Sigma_1) + tr(Sigma_2) - 2 tr((Sigma_1 Sigma_2)^{1/2}),
with Sigma the unbiased (ddof = 1) covariance. The trace term avoids `scipy.linalg.sqrtm`: for any factor
Sigma_1 = R R^T, Sigma_1 Sigma_2 = R (R^T Sigma_2 R) R^{-1} (or, for singular R, has the same non-zero
eigenvalues), so with the symmetric PSD matrix M = R^T Sigma_2 R
    tr((Sigma_1 Sigma_2)^{1/2}) = sum_i sqrt(lambda_i(M)).
R is the Cholesky factor L when Sigma_1 is positive definite; when Cholesky fails (singular covariances:
N <= D, constant features) R = Sigma_1^{1/2} = V diag(sqrt(max(l, 0))) V^T from the eigendecomposition
Sigma_1 = V diag(l) V^T. One Cholesky and one symmetric eigenvalue solve (`eigvalsh`) replace a Schur-based
matrix square root of a non-symmetric matrix: several times faster, and with round-off negatives of
lambda clipped to zero the result stays real and finite, with no epsilon added to the diagonal.

KID, Kernel Inception Distance (Binkowski et al., 2018): the unbiased estimator of the squared MMD with the
cubic polynomial kernel k(x, y) = (x^T y / D + 1)^3, on `num_subsets` seeded random subsets of m rows of
each set (m = min(subset_size, N_r, N_f); when m = N_r = N_f every subset is the whole set, so it is
computed once and the std is 0):
    MMD_u^2 = sum_{i != j} k(x_i, x_j) / (m(m-1)) + sum_{i != j} k(y_i, y_j) / (m(m-1))
              - 2 sum_{i,j} k(x_i, y_j) / m^2;
returns the mean and the (population, ddof = 0) standard deviation over subsets, as torch-fidelity does.

IS, Inception Score (Salimans et al., 2016) from class probabilities p(y|x) (N, C):
    IS = exp( E_x KL( p(y|x) || p(y) ) ),   p(y) = E_x p(y|x),
computed on `splits` disjoint parts of a seeded random permutation; returns mean and std over the parts.

Precision and recall (Kynkaanniemi et al., 2019), density and coverage (Naeem et al., 2020), with
NND_k(x) the distance from x to its k-th nearest neighbour in its own set (itself excluded) and
B(x, r) the open ball:
    precision = 1/N_f sum_j 1[ exists i: Y_j in B(X_i, NND_k(X_i)) ]
    recall    = 1/N_r sum_i 1[ exists j: X_i in B(Y_j, NND_k(Y_j)) ]
    density   = 1/(k N_f) sum_j sum_i 1[ Y_j in B(X_i, NND_k(X_i)) ]
    coverage  = 1/N_r sum_i 1[ exists j: Y_j in B(X_i, NND_k(X_i)) ]
(X real, Y fake), as the reference `prdc` package computes them, but in row blocks so that 10k x 10k
distance matrices never sit in memory at once.

`FeatureStats` accumulates mu and Sigma over batches in float64 with the pairwise update of
Chan, Golub & LeVeque (1979): merging (n_a, mu_a, M_a) and (n_b, mu_b, M_b), with M the sum of centred
outer products and n = n_a + n_b,
    delta = mu_b - mu_a,  mu = mu_a + delta n_b / n,  M = M_a + M_b + delta delta^T n_a n_b / n,
    Sigma = M / (n - 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from learnloop.errors import UserError

_BLOCK_BYTES = 64 * 2**20          # row blocks of pairwise-distance matrices stay under ~64 MB


def _as_matrix(x, name: str, min_rows: int = 2) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x):
        raise UserError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise UserError(f"{name} must be a 2-d (samples, features) matrix, got shape {tuple(x.shape)}")
    if len(x) < min_rows:
        raise UserError(f"{name} needs at least {min_rows} samples, got {len(x)}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise UserError(f"{name} contains NaN or Inf")
    return x


def _pair(real_feats, fake_feats, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_matrix(real_feats, "real_feats", min_rows), _as_matrix(fake_feats, "fake_feats", min_rows)
    if x.shape[1] != y.shape[1]:
        raise UserError(f"feature dimensions differ: real {x.shape[1]}, fake {y.shape[1]}")
    return x, y


# --- FID ----------------------------------------------------------------------------------------------
def _gram(xc: torch.Tensor) -> torch.Tensor:
    """X^T X of a float64 matrix. NumPy turns `a.T @ a` into one symmetric rank-k update (BLAS syrk),
    half the work of the general product torch would run."""
    a = xc.contiguous().numpy()
    return torch.from_numpy(a.T @ a)


def feature_stats(feats) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, Sigma) in float64; Sigma is the unbiased covariance (ddof = 1, as numpy.cov)."""
    x = _as_matrix(feats, "feats")
    mu = x.mean(0)
    return mu, _gram(x - mu) / (len(x) - 1)


def _check_stats(mu, sigma, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.as_tensor(mu).detach().to("cpu", torch.float64)
    sigma = torch.as_tensor(sigma).detach().to("cpu", torch.float64)
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise UserError(f"{name}: mu must be (D,) and sigma (D, D), "
                        f"got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    if not (torch.isfinite(mu).all() and torch.isfinite(sigma).all()):
        raise UserError(f"{name} contains NaN or Inf")
    return mu, sigma


def sqrt_psd(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix via eigh; round-off negative eigenvalues are clipped to 0."""
    s = (sigma + sigma.T) / 2
    lam, v = torch.linalg.eigh(s)
    return (v * lam.clamp_min(0).sqrt()) @ v.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> float:
    """tr((Sigma_1 Sigma_2)^{1/2}) = sum sqrt(eig(R^T Sigma_2 R)), Sigma_1 = R R^T; real and finite."""
    sigma1 = (sigma1 + sigma1.T) / 2
    chol, info = torch.linalg.cholesky_ex(sigma1)
    root = chol if int(info) == 0 else sqrt_psd(sigma1)
    m = root.T @ sigma2 @ root
    lam = torch.linalg.eigvalsh((m + m.T) / 2)
    return float(lam.clamp_min(0).sqrt().sum())


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    mu1, sigma1 = _check_stats(mu1, sigma1, "stats 1")
    mu2, sigma2 = _check_stats(mu2, sigma2, "stats 2")
    if len(mu1) != len(mu2):
        raise UserError(f"feature dimensions differ: {len(mu1)} vs {len(mu2)}")
    diff = mu1 - mu2
    value = float(diff @ diff) + float(torch.trace(sigma1) + torch.trace(sigma2)) \
        - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(value, 0.0)          # exact arithmetic gives >= 0; clip round-off of identical inputs


def fid(real_feats, fake_feats) -> float:
    x, y = _pair(real_feats, fake_feats)
    return fid_from_stats(*feature_stats(x), *feature_stats(y))


class FeatureStats:
    """Streaming mean and covariance of features in float64 (for FID over many batches)."""

    def __init__(self, dim: int | None = None):
        self.dim, self.n = dim, 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, feats) -> FeatureStats:
        x = _as_matrix(feats, "feats", min_rows=1)
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise UserError(f"feature dimension changed: expected {self.dim}, got {x.shape[1]}")
        nb, mb = len(x), x.mean(0)
        m2b = _gram(x - mb)
        if self.n == 0:
            self.n, self._mean, self._m2 = nb, mb, m2b
            return self
        n = self.n + nb
        delta = mb - self._mean
        self._mean = self._mean + delta * (nb / n)
        self._m2 = self._m2 + m2b + torch.outer(delta, delta) * (self.n * nb / n)
        self.n = n
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Combine with another accumulator (e.g. from another worker)."""
        if other.n == 0:
            return self
        if self.n == 0:
            self.dim, self.n = other.dim, other.n
            self._mean, self._m2 = other._mean.clone(), other._m2.clone()
            return self
        if other.dim != self.dim:
            raise UserError(f"feature dimensions differ: {self.dim} vs {other.dim}")
        n = self.n + other.n
        delta = other._mean - self._mean
        self._mean = self._mean + delta * (other.n / n)
        self._m2 = self._m2 + other._m2 + torch.outer(delta, delta) * (self.n * other.n / n)
        self.n = n
        return self

    @property
    def mean(self) -> torch.Tensor:
        if self.n < 1:
            raise UserError("FeatureStats is empty: call update() with features first")
        return self._mean.clone()

    @property
    def cov(self) -> torch.Tensor:
        if self.n < 2:
            raise UserError(f"covariance needs at least 2 samples, got {self.n}")
        return self._m2 / (self.n - 1)

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean, self.cov

    def fid(self, other: FeatureStats) -> float:
        return fid_from_stats(*self.stats(), *other.stats())


# --- KID ----------------------------------------------------------------------------------------------
def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> torch.Tensor:
    """k(x, y) = (gamma x^T y + coef0)^degree, gamma = 1 / D by default."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    if y is x:                       # a @ a.T: NumPy runs BLAS syrk (half the work of a general product)
        a = x.contiguous().numpy()
        dots = torch.from_numpy(a @ a.T)
    else:
        dots = x @ y.T
    return (gamma * dots + coef0) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3) -> float:
    m, n = len(x), len(y)
    kxx, kyy = polynomial_kernel(x, x, degree), polynomial_kernel(y, y, degree)
    kxy = polynomial_kernel(x, y, degree)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.sum() / (m * n))


def kid(real_feats, fake_feats, num_subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        seed: int = 0) -> tuple[float, float]:
    x, y = _pair(real_feats, fake_feats)
    if num_subsets < 1 or subset_size < 2 or degree < 1:
        raise UserError(f"kid needs num_subsets >= 1, subset_size >= 2, degree >= 1; got "
                        f"{num_subsets}, {subset_size}, {degree}")
    m = min(subset_size, len(x), len(y))
    if m == len(x) == len(y):       # every "subset" is a permutation of both whole sets: MMD_u^2 is the same
        return mmd2_unbiased(x, y, degree), 0.0
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_subsets):
        ix = torch.randperm(len(x), generator=g)[:m]
        iy = torch.randperm(len(y), generator=g)[:m]
        values.append(mmd2_unbiased(x[ix], y[iy], degree))
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std(correction=0))


# --- Inception Score ----------------------------------------------------------------------------------
def inception_score(probs, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    p = _as_matrix(probs, "probs", min_rows=1)
    if splits < 1 or len(p) < splits:
        raise UserError(f"inception_score needs 1 <= splits <= N; got splits={splits}, N={len(p)}")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise UserError("probs must be non-negative rows that sum to 1 (softmax outputs)")
    perm = torch.randperm(len(p), generator=torch.Generator().manual_seed(seed))
    scores = []
    for part in torch.tensor_split(p[perm], splits):
        py = part.mean(0, keepdim=True)
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, py)).sum(1).mean()
        scores.append(math.exp(float(kl)))
    s = torch.tensor(scores, dtype=torch.float64)
    return float(s.mean()), float(s.std(correction=0))


# --- precision / recall / density / coverage ----------------------------------------------------------
def _block_rows(n_cols: int) -> int:
    return max(1, _BLOCK_BYTES // (8 * max(n_cols, 1)))


def pairwise_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean distances sqrt(max(|x|^2 + |y|^2 - 2 x^T y, 0)) as scikit-learn computes them."""
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * (x @ y.T)
    return d2.clamp_min_(0).sqrt_()


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """NND_k: distance of each row to its k-th nearest other row (self, at distance 0, excluded)."""
    out = torch.empty(len(x), dtype=torch.float64)
    b = _block_rows(len(x))
    for lo in range(0, len(x), b):
        d = pairwise_distances(x[lo:lo + b], x)
        rows = torch.arange(len(d))
        d[rows, rows + lo] = 0.0                       # exact zero self-distance, as scikit-learn sets it
        out[lo:lo + b] = d.topk(k + 1, dim=1, largest=False).values[:, -1]
    return out


def prdc(real_feats, fake_feats, k: int = 5) -> dict[str, float]:
    x, y = _pair(real_feats, fake_feats)
    if k < 1 or k >= min(len(x), len(y)):
        raise UserError(f"k must be in [1, min(N_real, N_fake) - 1] = [1, {min(len(x), len(y)) - 1}], "
                        f"got {k}")
    r_real, r_fake = knn_radii(x, k), knn_radii(y, k)
    in_real_balls = torch.zeros(len(y), dtype=torch.float64)    # per fake: how many real balls contain it
    recalled = torch.zeros(len(x), dtype=torch.bool)
    covered = torch.zeros(len(x), dtype=torch.bool)
    b = _block_rows(len(y))
    for lo in range(0, len(x), b):
        d = pairwise_distances(x[lo:lo + b], y)                  # (block of real, fake)
        r = r_real[lo:lo + b, None]
        in_real_balls += (d < r).sum(0)
        recalled[lo:lo + b] = (d < r_fake[None, :]).any(1)
        covered[lo:lo + b] = d.min(1).values < r[:, 0]
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(recalled.double().mean()),
        "density": float(in_real_balls.mean() / k),
        "coverage": float(covered.double().mean()),
    }
