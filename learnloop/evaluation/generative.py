"""One protocol for scoring generated images against Fashion-MNIST, with the real-data floor and a noise ceiling.

`evaluate_images(fake, extractor=...)` extracts features phi and class probabilities p(y|x) of the generated
images with a fixed extractor taken by name from the registry `learnloop.evaluation.extractors` ("fashion",
the shipped Fashion-MNIST evaluator `learnloop.models.evaluator`, by default; "inception-v3" with a weights
file; any network a user registers). Images of any size and channel count (grey or RGB; uint8, or float in
`value_range`, e.g. (-1, 1) for a tanh generator) reach it through that module's one rule, `prepare_images`
(values to the extractor's range, ITU-R 601 luma or channel repetition, bilinear resize antialiased when
shrinking); the real reference images (1 x 28 x 28 uint8) and the noise ceiling take the same path.
It reports, from `learnloop.metrics.generative`:

- FID (Heusel et al., 2017) of the N_f fake images against the reference statistics (mu, Sigma) of the
  *whole* reference split (shipped for the Fashion evaluator, computed once per process for the others);
- KID (Binkowski et al., 2018), precision/recall (Kynkaanniemi et al., 2019) and density/coverage
  (Naeem et al., 2020) against a seeded random subset of N_r = min(N_f, |split|) real images, k-NN radius k;
- the Inception Score (Salimans et al., 2016) of p(y|x) over `splits` seeded splits, and the histogram of
  argmax_y p(y|x) (mode collapse shows here first); both are None for an extractor without a classifier.

Every metric is a finite-sample estimate whose value depends on N, k, the extractor and the reference, so the
result carries its `protocol` and two reference rows computed with the very same protocol:
- floor: N_f real images of the *other* split (train when the reference is test) scored as if generated,
  i.e. the best a perfect generator can expect at this N;
- ceiling: N_f images of uniform noise (1 x 28 x 28, the reference data's format), a trivial generator.
Both rows depend only on (extractor, reference split, N_f, k, splits, seed) and are cached in-process for
extractors obtained by name (`get_extractor`).

Reading the rows: FID and KID have a finite-N bias, so the floor is not 0 (at N_f = 300 the floor FID is ~20
with the Fashion evaluator). k-NN precision alone is not a sanity check: uniform noise gets precision 0.7-1
here, because its features land inside the wide k-NN balls of atypical real images; density, recall and
coverage expose it (Naeem et al., 2020 introduced density/coverage for exactly this outlier sensitivity).

In a recipe config, nest `eval: GenerativeEvalConfig = section(GenerativeEvalConfig, "evaluation")` (keys
`eval.extractor`, `eval.weights`, `eval.reference`, `eval.samples`, `eval.k`, `eval.splits`); then
`evaluate_generated(fake, cfg.eval, seed)` scores images and `load_extractor(cfg.eval)` fails early (before
training) on an unknown extractor or a missing weights file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from learnloop.errors import UserError
from learnloop.evaluation.extractors import (
    DEFAULT,
    UNIT,
    Extractor,
    check_value_range,
    check_images,
    get_extractor,
)
from learnloop.metrics.generative import FeatureStats, feature_stats, fid_from_stats, inception_score, kid, prdc
from learnloop.utils.params import param

METRICS = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "density", "coverage")
SPLITS = ("train", "test")
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
STATS_CHUNK = 500


# --- config sections ------------------------------------------------------------------------------------
@dataclass
class FeatureConfig:
    """Which features: an extractor by registry name, its weights file, and the real split compared with."""

    extractor: str = param(DEFAULT, "feature extractor by registry name (learnloop.evaluation.extractors): "
                                    "fashion, inception-v3, or one added with register_extractor")
    weights: str = param("", "weights file of an extractor that needs one (inception-v3: pytorch-fid's "
                             "pt_inception-2015-12-05 state dict)")
    reference: str = param("test", "real split the images are compared with", choices=SPLITS)


@dataclass
class GenerativeEvalConfig(FeatureConfig):
    """The whole protocol of `evaluate_images`: features, sample count, k-NN k and Inception Score splits."""

    samples: int = param(10000, "generated images scored (and as many real images per side)", min=2,
                         max=60000)
    k: int = param(5, "k of the k-NN radii (precision/recall/density/coverage)", min=1, max=100)
    splits: int = param(10, "Inception Score splits", min=1, max=100)


def load_extractor(cfg: FeatureConfig) -> Extractor:
    """get_extractor(cfg.extractor, weights=cfg.weights if set): call it before training to fail early."""
    return get_extractor(cfg.extractor, **({"weights": cfg.weights} if cfg.weights else {}))


# --- extractors -----------------------------------------------------------------------------------------
def evaluator_available() -> bool:
    """The shipped Fashion-MNIST evaluator's weights and reference statistics are installed."""
    from learnloop.models.evaluator import STATS_FILE, WEIGHTS_FILE, assets_dir

    return (assets_dir() / WEIGHTS_FILE).is_file() and (assets_dir() / STATS_FILE).is_file()


def extractor_ready(features: FeatureConfig) -> bool:
    """Whether evaluation can run: the Fashion evaluator is installed, or another extractor loads (an unknown
    extractor or a missing weights file raises its one-line error)."""
    if features.extractor == "fashion":
        return evaluator_available()
    with torch.random.fork_rng(devices=[]):        # building it must not shift training's random stream
        load_extractor(features)
    return True


class _ObjectExtractor(Extractor):
    """An object with .features(images) and .probs(images) (how extractors were passed before the registry),
    used as is: images reach it unconverted, so it must accept them itself."""

    def __init__(self, obj):
        self.obj, self.name = obj, getattr(obj, "name", type(obj).__name__)
        self.feature_dim, self.num_classes = getattr(obj, "feature_dim", 0), getattr(obj, "num_classes", 0)

    def describe(self) -> str:
        return self.name

    def forward(self, x):
        if hasattr(self.obj, "features_and_probs"):
            return self.obj.features_and_probs(x)
        return self.obj.features(x), self.obj.probs(x)

    def features_and_probs(self, images, value_range=UNIT):
        """The object's own outputs for the images as given (no resize rule, no batching here)."""
        if check_value_range(value_range) != UNIT:
            raise UserError(f"extractor object {self.name} takes images as they are: value_range must be "
                            f"(0, 1); wrap it in ModuleExtractor(module, ImageSpec(...)) to convert")
        return self.forward(images)


def as_extractor(extractor) -> Extractor:
    """A registry name -> get_extractor(name); an Extractor as is; an object with .features() and .probs()
    wrapped unconverted."""
    if isinstance(extractor, Extractor):
        return extractor
    if isinstance(extractor, str):
        return get_extractor(extractor)
    if hasattr(extractor, "features") and hasattr(extractor, "probs"):
        return _ObjectExtractor(extractor)
    raise UserError("an extractor is a registered name (learnloop.evaluation.extractor_names()), an Extractor, "
                    f"or an object with .features(images) and .probs(images) methods; got {type(extractor).__name__}")


def _split_images(split: str) -> torch.Tensor:
    from learnloop.data.vision import load_fashion_mnist

    return load_fashion_mnist(split).images


def _subset(n_total: int, n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def _real_uncached(ext: Extractor, split: str, n: int, seed: int):
    images = _split_images(split)
    return ext.features_and_probs(images[_subset(len(images), n, seed)])


@functools.lru_cache(maxsize=8)
def _cached_real(ext: Extractor, split: str, n: int, seed: int):
    return _real_uncached(ext, split, n, seed)


def _real(ext: Extractor, split: str, n: int, seed: int):
    """Features and probabilities of a seeded subset of n images of a real split."""
    return (_cached_real if ext.cache_key is not None else _real_uncached)(ext, split, n, seed)


def _stats_uncached(ext: Extractor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    shipped = ext.reference_stats(split)
    if shipped is not None:
        return shipped
    images = _split_images(split)
    acc = FeatureStats()
    for lo in range(0, len(images), STATS_CHUNK):
        acc.update(ext.features(images[lo:lo + STATS_CHUNK]))
    return acc.mean, acc.cov


@functools.lru_cache(maxsize=8)
def _cached_stats(ext: Extractor, split: str):
    return _stats_uncached(ext, split)


def _reference_stats(ext: Extractor, split: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    mu, sigma = (_cached_stats if ext.cache_key is not None else _stats_uncached)(ext, split)
    return mu, sigma, len(_split_images(split))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown reference split '{split}'; choose from {', '.join(SPLITS)}")


def reference_statistics(split: str = "test", extractor=DEFAULT) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, Sigma), float64, of the extractor's features over the whole Fashion-MNIST `split`."""
    _check_split(split)
    mu, sigma, _ = _reference_stats(as_extractor(extractor), split)
    return mu, sigma


def fid_to_reference(images, split: str = "test", extractor=DEFAULT, *, value_range=UNIT) -> float:
    """FID of all `images` (any format the resize rule converts) against the whole `split`'s statistics: the
    cheap per-epoch fidelity number of a GAN monitor."""
    _check_split(split)
    ext = as_extractor(extractor)
    images = check_images(images, value_range, "images")
    if len(images) < 2:
        raise UserError(f"FID needs at least 2 images, got {len(images)}")
    mu, sigma, _ = _reference_stats(ext, split)
    return fid_from_stats(mu, sigma, *feature_stats(ext.features(images, value_range)))


# --- scoring ------------------------------------------------------------------------------------------
def score_features(real_feats, fake_feats, fake_probs, ref_mu, ref_sigma, *, k: int = 5, seed: int = 0,
                   splits: int = 10, kid_subsets: int = KID_SUBSETS,
                   kid_subset_size: int = KID_SUBSET_SIZE) -> dict:
    """All metrics of one fake feature set against real features (KID, PRDC) and reference stats (FID);
    `fake_probs` None (no classifier) leaves is_mean, is_std and class_hist None."""
    acc = FeatureStats().update(fake_feats)
    kid_mean, kid_std = kid(real_feats, fake_feats, kid_subsets, kid_subset_size, seed=seed)
    if fake_probs is not None:
        is_mean, is_std = inception_score(fake_probs, splits, seed)
        hist = torch.bincount(fake_probs.argmax(1), minlength=fake_probs.shape[1]).double() / len(fake_probs)
        hist = [round(float(h), 6) for h in hist]
    else:
        is_mean = is_std = hist = None
    return {"fid": fid_from_stats(ref_mu, ref_sigma, *acc.stats()), "kid_mean": kid_mean, "kid_std": kid_std,
            "is_mean": is_mean, "is_std": is_std, **prdc(real_feats, fake_feats, k), "class_hist": hist}


def _check_images(images, value_range) -> torch.Tensor:
    images = check_images(images, value_range, "fake images")
    if len(images) < 2:
        raise UserError(f"need at least 2 fake images, got {len(images)}")
    return images


def _input_text(images: torch.Tensor, value_range) -> str:
    _, c, h, w = images.shape
    kind = "uint8" if images.dtype == torch.uint8 else "float in [{:g}, {:g}]".format(*check_value_range(value_range))
    return f"{kind} {c}x{h}x{w}"


def _protocol(ext: Extractor, split, n_real, n_real_fid, n_fake, k, splits, seed, kid_subset_size,
              fake_input: str | None = None) -> dict:
    p = {"extractor": ext.name, "reference_split": split, "n_real": n_real,
         "n_real_fid": n_real_fid, "n_fake": n_fake, "k": k, "splits": splits, "seed": seed,
         "kid_subsets": KID_SUBSETS, "kid_subset_size": min(kid_subset_size, n_real, n_fake),
         "fid_reference": f"statistics of all {n_real_fid} {split} images",
         "kid_prdc_reference": f"{n_real} {split} images drawn with seed {seed}"}
    spec = getattr(ext, "spec", None)
    if spec is not None:
        p["extractor_input"] = str(spec)
    if fake_input is not None:
        p["fake_input"] = fake_input
    return p


def _reference_row(kind: str, ext: Extractor, split: str, n_fake: int, k: int, seed: int, splits: int) -> dict:
    mu, sigma, _ = _reference_stats(ext, split)
    n_real = min(n_fake, len(_split_images(split)))
    real_feats, _ = _real(ext, split, n_real, seed)
    if kind == "floor":
        other = "train" if split == "test" else "test"
        n = min(n_fake, len(_split_images(other)))
        feats, probs = _real(ext, other, n, seed + 1)
        source = f"{n} real {other} images"
    else:
        noise = torch.randint(0, 256, (n_fake, 1, 28, 28), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(seed + 2))
        feats, probs = ext.features_and_probs(noise)
        source = f"{n_fake} uniform-noise images"
    row = score_features(real_feats, feats, probs, mu, sigma, k=k, seed=seed, splits=splits)
    row["source"] = source
    return row


@functools.lru_cache(maxsize=16)
def _cached_reference_row(ext: Extractor, kind: str, split: str, n_fake: int, k: int, seed: int,
                          splits: int) -> dict:
    return _reference_row(kind, ext, split, n_fake, k, seed, splits)


def reference_row(kind: str, split: str = "test", n: int = 10000, k: int = 5, seed: int = 0, splits: int = 10,
                  extractor=DEFAULT) -> dict:
    """The floor ("floor": real images of the other split) or ceiling ("ceiling": uniform noise) metrics."""
    if kind not in ("floor", "ceiling"):
        raise UserError(f"unknown reference row '{kind}'; choose floor or ceiling")
    _check_split(split)
    ext = as_extractor(extractor)
    if ext.cache_key is not None:
        return dict(_cached_reference_row(ext, kind, split, n, k, seed, splits))
    return _reference_row(kind, ext, split, n, k, seed, splits)


def reference_report(real_split: str = "test", n: int = 10000, k: int = 5, seed: int = 0, splits: int = 10,
                     extractor=DEFAULT) -> dict:
    """Only the floor and ceiling rows and their protocol (no model): what a generator is measured against."""
    _check_split(real_split)
    if n < 2 or k < 1 or k >= n or not 1 <= splits <= n:
        raise UserError(f"need n >= 2, 1 <= k < n and 1 <= splits <= n; got n={n}, k={k}, splits={splits}")
    ext = as_extractor(extractor)
    n_ref = len(_split_images(real_split))
    return {"protocol": _protocol(ext, real_split, min(n, n_ref), n_ref, n, k, splits, seed, KID_SUBSET_SIZE),
            "floor": reference_row("floor", real_split, n, k, seed, splits, ext),
            "ceiling": reference_row("ceiling", real_split, n, k, seed, splits, ext)}


def evaluate_images(fake_uint8, real_split: str = "test", n: int | None = None, k: int = 5, seed: int = 0,
                    splits: int = 10, extractor=DEFAULT, with_floor: bool = True,
                    with_ceiling: bool = True, *, value_range=UNIT) -> dict:
    """Score generated images: uint8, or float in `value_range` ((0, 1) unless given), shape (N, 1 or 3, H, W)
    or (N, H, W), converted to the extractor's input by `prepare_images`; `n` draws a seeded subset."""
    _check_split(real_split)
    images = _check_images(fake_uint8, value_range)
    ext = as_extractor(extractor)
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
    fake_feats, fake_probs = ext.features_and_probs(images, value_range)
    mu, sigma, n_ref = _reference_stats(ext, real_split)
    n_real = min(n_fake, n_ref)
    real_feats, _ = _real(ext, real_split, n_real, seed)
    result = score_features(real_feats, fake_feats, fake_probs, mu, sigma, k=k, seed=seed, splits=splits)
    result["protocol"] = _protocol(ext, real_split, n_real, n_ref, n_fake, k, splits, seed, KID_SUBSET_SIZE,
                                   _input_text(images, value_range))
    result["floor"] = reference_row("floor", real_split, n_fake, k, seed, splits, ext) if with_floor else None
    result["ceiling"] = reference_row("ceiling", real_split, n_fake, k, seed, splits, ext) \
        if with_ceiling else None
    return result


def evaluate_generated(fake, cfg: GenerativeEvalConfig, seed: int = 0, *, value_range=UNIT,
                       with_floor: bool = True, with_ceiling: bool = True) -> dict:
    """`evaluate_images` with the protocol of a config section (`eval.*`): cfg.samples of the fake images
    (a seeded subset when there are more), against cfg.reference, with cfg.extractor."""
    return evaluate_images(fake, cfg.reference, cfg.samples, cfg.k, seed, cfg.splits, load_extractor(cfg),
                           with_floor, with_ceiling, value_range=value_range)


# --- report -------------------------------------------------------------------------------------------
_ROWS = (("FID", "fid", None, "lower"), ("KID x 1e3", "kid_mean", "kid_std", "lower"),
         ("Inception Score", "is_mean", "is_std", "higher"), ("precision", "precision", None, "higher"),
         ("recall", "recall", None, "higher"), ("density", "density", None, "~1"),
         ("coverage", "coverage", None, "higher"))


def _cell(row: dict | None, key: str, std: str | None, scale: float) -> str:
    if row is None or row.get(key) is None:
        return "-"
    text = f"{row[key] * scale:.4g}"
    return f"{text} +- {row[std] * scale:.2g}" if std else text


def format_report(result: dict) -> str:
    """A plain-text table: each metric for the model (if any) beside the real-data floor and noise ceiling."""
    p = result["protocol"]
    floor, ceiling = result.get("floor"), result.get("ceiling")
    shown = p["extractor"] + (f" (input {p['extractor_input']})" if p.get("extractor_input") else "")
    lines = [(f"extractor: {shown};  reference: {p['reference_split']} split "
              f"(FID vs {p['fid_reference']}; KID/PRDC vs {p['kid_prdc_reference']})"),
             (f"N fake {p['n_fake']}, N real {p['n_real']}, k {p['k']}, IS splits {p['splits']}, "
              f"KID {p['kid_subsets']} subsets of {p['kid_subset_size']}, seed {p['seed']}"
              + (f", fake images {p['fake_input']}" if p.get("fake_input") else ""))]
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
        if row is not None and row.get("class_hist") is not None:
            hist = " ".join(f"{h:.2f}" for h in row["class_hist"])
            lines.append(f"class histogram, {name} (argmax p(y|x)): {hist}")
    return "\n".join(lines)
