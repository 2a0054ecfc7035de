"""One protocol for scoring generated Fashion-MNIST images, with the real-data floor and a noise ceiling.

`evaluate_images(fake)` extracts features phi and class probabilities p(y|x) of the generated images with
a fixed extractor (the shipped Fashion-MNIST evaluator by default, `learnloop.models.evaluator`) and
reports, from `learnloop.metrics.generative`:

- FID (Heusel et al., 2017) of the N_f fake images against the reference statistics (mu, Sigma) of the
  *whole* reference split (shipped for the Fashion evaluator);
- KID (Binkowski et al., 2018), precision/recall (Kynkaanniemi et al., 2019) and density/coverage
  (Naeem et al., 2020) against a seeded random subset of N_r = min(N_f, |split|) real images, k-NN radius k;
- the Inception Score (Salimans et al., 2016) of p(y|x) over `splits` seeded splits, and the histogram of
  argmax_y p(y|x) (mode collapse shows here first).

Every metric is a finite-sample estimate whose value depends on N, k, the extractor and the reference, so the
result carries its `protocol` and two reference rows computed with the very same protocol:
- floor: N_f real images of the *other* split (train when the reference is test) scored as if generated,
  i.e. the best a perfect generator can expect at this N;
- ceiling: N_f images of uniform noise, a trivial generator.
Both rows depend only on (extractor, reference split, N_f, k, splits, seed) and are cached in-process.

Reading the rows: FID and KID have a finite-N bias, so the floor is not 0 (at N_f = 300 the floor FID is ~20
with the Fashion evaluator). k-NN precision alone is not a sanity check: uniform noise gets precision 0.7-1
here, because its features land inside the wide k-NN balls of atypical real images; density, recall and
coverage expose it (Naeem et al., 2020 introduced density/coverage for exactly this outlier sensitivity).
"""

from __future__ import annotations

import functools

import torch

from learnloop.errors import UserError
from learnloop.metrics.generative import FeatureStats, fid_from_stats, inception_score, kid, prdc

METRICS = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "density", "coverage")
SPLITS = ("train", "test")
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


# --- extractors ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _fashion_evaluator():
    from learnloop.models.evaluator import load_fashion_evaluator

    return load_fashion_evaluator()


def _resolve(extractor):
    """'fashion' -> the shipped evaluator; an object with .features() and .probs() methods is used as is."""
    if isinstance(extractor, str):
        if extractor == "fashion":
            return _fashion_evaluator()
        if extractor == "inception":
            raise UserError("extractor='inception' needs weights: pass a FIDInceptionV3 loaded with "
                            "learnloop.models.inception.load_inception_weights(path) as `extractor`")
        raise UserError(f"unknown extractor '{extractor}'; choose 'fashion' or pass an extractor object")
    if not (hasattr(extractor, "features") and hasattr(extractor, "probs")):
        raise UserError("an extractor object needs .features(images) and .probs(images) methods")
    return extractor


def _extractor_name(extractor, model) -> str:
    if extractor == "fashion":
        return f"fashion-evaluator ({model.feature_dim}-d penultimate)"
    return getattr(model, "name", type(model).__name__)


def _features_and_probs(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(model, "features_and_probs"):
        return model.features_and_probs(images)
    return model.features(images), model.probs(images)


def _split_images(split: str) -> torch.Tensor:
    from learnloop.data.vision import load_fashion_mnist

    return load_fashion_mnist(split).images


def _subset(n_total: int, n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


@functools.lru_cache(maxsize=8)
def _fashion_real(split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and probabilities of a seeded subset of n images of a real split (fashion evaluator)."""
    images = _split_images(split)
    return _features_and_probs(_fashion_evaluator(), images[_subset(len(images), n, seed)])


def _real(extractor, model, split: str, n: int, seed: int):
    if extractor == "fashion":
        return _fashion_real(split, n, seed)
    images = _split_images(split)
    return _features_and_probs(model, images[_subset(len(images), n, seed)])


def _reference_stats(extractor, model, split: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    images = _split_images(split)
    if extractor == "fashion":
        from learnloop.models.evaluator import reference_stats

        mu, sigma = reference_stats(split)
        return mu, sigma, len(images)
    acc = FeatureStats()
    for lo in range(0, len(images), 500):
        acc.update(model.features(images[lo:lo + 500]))
    return acc.mean, acc.cov, len(images)


# --- scoring ------------------------------------------------------------------------------------------
def score_features(real_feats, fake_feats, fake_probs, ref_mu, ref_sigma, *, k: int = 5, seed: int = 0,
                   splits: int = 10, kid_subsets: int = KID_SUBSETS,
                   kid_subset_size: int = KID_SUBSET_SIZE) -> dict:
    """All metrics of one fake feature set against real features (KID, PRDC) and reference stats (FID)."""
    acc = FeatureStats().update(fake_feats)
    kid_mean, kid_std = kid(real_feats, fake_feats, kid_subsets, kid_subset_size, seed=seed)
    is_mean, is_std = inception_score(fake_probs, splits, seed)
    hist = torch.bincount(fake_probs.argmax(1), minlength=fake_probs.shape[1]).double() / len(fake_probs)
    return {"fid": fid_from_stats(ref_mu, ref_sigma, *acc.stats()), "kid_mean": kid_mean, "kid_std": kid_std,
            "is_mean": is_mean, "is_std": is_std, **prdc(real_feats, fake_feats, k),
            "class_hist": [round(float(h), 6) for h in hist]}


def _check_images(images) -> torch.Tensor:
    if not torch.is_tensor(images):
        raise UserError(f"fake images must be a torch tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise UserError(f"fake images must be (N, 1, 28, 28), got shape {tuple(images.shape)}")
    if len(images) < 2:
        raise UserError(f"need at least 2 fake images, got {len(images)}")
    if images.is_floating_point() and not torch.isfinite(images).all():
        raise UserError("fake images contain NaN or Inf")
    return images


def _protocol(extractor, model, split, n_real, n_real_fid, n_fake, k, splits, seed, kid_subset_size) -> dict:
    return {"extractor": _extractor_name(extractor, model), "reference_split": split, "n_real": n_real,
            "n_real_fid": n_real_fid, "n_fake": n_fake, "k": k, "splits": splits, "seed": seed,
            "kid_subsets": KID_SUBSETS, "kid_subset_size": min(kid_subset_size, n_real, n_fake),
            "fid_reference": f"statistics of all {n_real_fid} {split} images",
            "kid_prdc_reference": f"{n_real} {split} images drawn with seed {seed}"}


def _reference_row(kind: str, extractor, model, split: str, n_fake: int, k: int, seed: int,
                   splits: int) -> dict:
    mu, sigma, _ = _reference_stats(extractor, model, split)
    n_real = min(n_fake, len(_split_images(split)))
    real_feats, _ = _real(extractor, model, split, n_real, seed)
    if kind == "floor":
        other = "train" if split == "test" else "test"
        n = min(n_fake, len(_split_images(other)))
        feats, probs = _real(extractor, model, other, n, seed + 1)
        source = f"{n} real {other} images"
    else:
        noise = torch.randint(0, 256, (n_fake, 1, 28, 28), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(seed + 2))
        feats, probs = _features_and_probs(model, noise)
        source = f"{n_fake} uniform-noise images"
    row = score_features(real_feats, feats, probs, mu, sigma, k=k, seed=seed, splits=splits)
    row["source"] = source
    return row


@functools.lru_cache(maxsize=16)
def _fashion_reference_row(kind: str, split: str, n_fake: int, k: int, seed: int, splits: int) -> dict:
    return _reference_row(kind, "fashion", _fashion_evaluator(), split, n_fake, k, seed, splits)


def reference_row(kind: str, split: str = "test", n: int = 10000, k: int = 5, seed: int = 0, splits: int = 10,
                  extractor="fashion") -> dict:
    """The floor ("floor": real images of the other split) or ceiling ("ceiling": uniform noise) metrics."""
    if kind not in ("floor", "ceiling"):
        raise UserError(f"unknown reference row '{kind}'; choose floor or ceiling")
    if split not in SPLITS:
        raise UserError(f"unknown reference split '{split}'; choose from {', '.join(SPLITS)}")
    if extractor == "fashion":
        return dict(_fashion_reference_row(kind, split, n, k, seed, splits))
    return _reference_row(kind, extractor, _resolve(extractor), split, n, k, seed, splits)


def reference_report(real_split: str = "test", n: int = 10000, k: int = 5, seed: int = 0, splits: int = 10,
                     extractor="fashion") -> dict:
    """Only the floor and ceiling rows and their protocol (no model): what a generator is measured against."""
    if real_split not in SPLITS:
        raise UserError(f"unknown reference split '{real_split}'; choose from {', '.join(SPLITS)}")
    if n < 2 or k < 1 or k >= n or not 1 <= splits <= n:
        raise UserError(f"need n >= 2, 1 <= k < n and 1 <= splits <= n; got n={n}, k={k}, splits={splits}")
    model = _resolve(extractor)
    n_ref = len(_split_images(real_split))
    return {"protocol": _protocol(extractor, model, real_split, min(n, n_ref), n_ref, n, k, splits, seed,
                                  KID_SUBSET_SIZE),
            "floor": reference_row("floor", real_split, n, k, seed, splits, extractor),
            "ceiling": reference_row("ceiling", real_split, n, k, seed, splits, extractor)}


def evaluate_images(fake_uint8, real_split: str = "test", n: int | None = None, k: int = 5, seed: int = 0,
                    splits: int = 10, extractor="fashion", with_floor: bool = True,
                    with_ceiling: bool = True) -> dict:
    """Score generated images (uint8 (N, 1, 28, 28), or float in [0, 1]); `n` draws a seeded subset."""
    if real_split not in SPLITS:
        raise UserError(f"unknown reference split '{real_split}'; choose from {', '.join(SPLITS)}")
    images = _check_images(fake_uint8)
    model = _resolve(extractor)
    if n is not None:
        if not 2 <= n <= len(images):
            raise UserError(f"n must be in [2, {len(images)}] (the number of fake images), got {n}")
        if n < len(images):
            images = images[_subset(len(images), n, seed + 3)]
    n_fake = len(images)
    if k < 1 or k >= n_fake:
        raise UserError(f"k must be in [1, N_fake - 1] = [1, {n_fake - 1}], got {k}")
    if splits < 1 or splits > n_fake:
        raise UserError(f"splits must be in [1, N_fake] = [1, {n_fake}], got {splits}")
    fake_feats, fake_probs = _features_and_probs(model, images)
    mu, sigma, n_ref = _reference_stats(extractor, model, real_split)
    n_real = min(n_fake, n_ref)
    real_feats, _ = _real(extractor, model, real_split, n_real, seed)
    result = score_features(real_feats, fake_feats, fake_probs, mu, sigma, k=k, seed=seed, splits=splits)
    result["protocol"] = _protocol(extractor, model, real_split, n_real, n_ref, n_fake, k, splits, seed,
                                   KID_SUBSET_SIZE)
    result["floor"] = reference_row("floor", real_split, n_fake, k, seed, splits, extractor) \
        if with_floor else None
    result["ceiling"] = reference_row("ceiling", real_split, n_fake, k, seed, splits, extractor) \
        if with_ceiling else None
    return result


# --- report -------------------------------------------------------------------------------------------
_ROWS = (("FID", "fid", None, "lower"), ("KID x 1e3", "kid_mean", "kid_std", "lower"),
         ("Inception Score", "is_mean", "is_std", "higher"), ("precision", "precision", None, "higher"),
         ("recall", "recall", None, "higher"), ("density", "density", None, "~1"),
         ("coverage", "coverage", None, "higher"))


def _cell(row: dict | None, key: str, std: str | None, scale: float) -> str:
    if row is None:
        return "-"
    text = f"{row[key] * scale:.4g}"
    return f"{text} +- {row[std] * scale:.2g}" if std else text


def format_report(result: dict) -> str:
    """A plain-text table: each metric for the model (if any) beside the real-data floor and noise ceiling."""
    p = result["protocol"]
    floor, ceiling = result.get("floor"), result.get("ceiling")
    lines = [(f"extractor: {p['extractor']};  reference: {p['reference_split']} split "
              f"(FID vs {p['fid_reference']}; KID/PRDC vs {p['kid_prdc_reference']})"),
             (f"N fake {p['n_fake']}, N real {p['n_real']}, k {p['k']}, IS splits {p['splits']}, "
              f"KID {p['kid_subsets']} subsets of {p['kid_subset_size']}, seed {p['seed']}")]
    columns = ([("model", result)] if "fid" in result else []) + [("floor (real)", floor),
                                                                    ("ceiling (noise)", ceiling)]
    head = ("metric", "better", *(name for name, _ in columns))
    table = [head]
    for label, key, std, better in _ROWS:
        scale = 1e3 if key == "kid_mean" else 1.0
        table.append((label, better, *(_cell(row, key, std, scale) for _, row in columns)))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    if floor is not None:
        lines.append(f"floor = {floor['source']}; ceiling = {ceiling['source'] if ceiling else '-'}")
    for name, row in columns:
        if row is not None:
            hist = " ".join(f"{h:.2f}" for h in row["class_hist"])
            lines.append(f"class histogram, {name} (argmax p(y|x)): {hist}")
    return "\n".join(lines)
