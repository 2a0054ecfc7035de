"""Recipes about *measuring* generative models (no training): why features, and what the numbers mean.

- `pixel-vs-feature`: perturb real test images by small translations (s pixels, zero fill) and additive
  Gaussian noise (x' = clip(x + sigma eps, 0, 1)); for each level report the mean distance to the original,
      pixel:    d_pix  = mean_i ||x_i - x'_i||_2 / mean_i ||x_i - x_pi(i)||_2
      feature:  d_feat = mean_i ||phi(x_i) - phi(x'_i)||_2 / mean_i ||phi(x_i) - phi(x_pi(i))||_2
  where pi pairs each image with another random real image, so 1.0 means "as far apart as two different
  garments". Measured with the shipped evaluator phi (`learnloop.models.evaluator`; any extractor of
  `learnloop.evaluation.extractors` with `eval.extractor=NAME`): a 1-pixel shift, which
  leaves the garment unchanged, moves pixel distance ~3x more than feature distance; additive noise, which
  visibly degrades the image, does the opposite (sigma = 0.1 moves features ~2x more than pixels; the
  evaluator never saw noise, Fashion-MNIST backgrounds are exactly 0). Pixel distance thus ranks an
  invisible change above a visible one; features rank them the way a person would, which is why FID, KID
  and PRDC compare features (Heusel et al., 2017, showed FID rising with noise, blur and other disturbances).
  FID of each perturbed set against the test statistics is reported too.
- `gen-eval-floor`: the reference rows every generative result is read against (see
  `learnloop.evaluation.generative`): real train images scored as if generated (the floor) and uniform noise
  (the ceiling), with the exact protocol (`eval.*`: extractor, images per side, k, IS splits, reference).

Both are studies: they train nothing, so their parts are `data` (pixel-vs-feature's seeded image subset) and
`evaluate`, and they have no predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from learnloop.data.vision import load_fashion_mnist
from learnloop.errors import UserError
from learnloop.evaluation.generative import (
    SPLITS, FeatureConfig, GenerativeEvalConfig, format_report, load_extractor, reference_report,
    reference_statistics,
)
from learnloop.metrics.generative import FeatureStats, fid_from_stats
from learnloop.recipes.base import Bundle, Parts, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import DataConfig
from learnloop.utils.images import save_image_grid
from learnloop.utils.io import save_figure, write_json, write_text

METRIC_KEYS = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "density",
               "coverage")


# --- pixel vs feature ---------------------------------------------------------------------------------
@dataclass
class PerturbDataConfig(DataConfig):
    dataset: str = param("fashion-mnist", "dataset of the real images", choices=("fashion-mnist",))
    split: str = param("test", "split the images are drawn from (with the run's seed)", choices=SPLITS)
    subset: int = param(1000, "images to perturb", min=20, max=10000)


@dataclass
class PixelFeatureConfig:
    data: PerturbDataConfig = section(PerturbDataConfig, "the real images (val/test fractions are unused)")
    eval: FeatureConfig = section(FeatureConfig, "feature extractor and the split of the FID statistics")
    shifts: tuple[int, ...] = param((0, 1, 2, 3), "horizontal translations in pixels", min=0, max=14)
    noise: tuple[float, ...] = param((0.0, 0.05, 0.1, 0.2, 0.3), "Gaussian noise std (images in [0, 1])",
                                     min=0.0, max=2.0)
    grid: int = param(8, "images per perturbation level in samples/perturbations.png", min=1, max=64)

    MOVED = {"n": "data.subset"}


def shift_images(x: torch.Tensor, s: int) -> torch.Tensor:
    """Translate right by s pixels; the uncovered columns are black (0)."""
    if s == 0:
        return x.clone()
    return F.pad(x, (s, 0))[..., :x.shape[-1]]


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    return (x + sigma * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def _mean_dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.flatten(1).double() - b.flatten(1).double()).norm(dim=1).mean())


def _plot_pixel_vs_feature(curves: dict, cfg: PixelFeatureConfig, extractor: str, path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (kind, xlabel) in zip(axes[:2], (("shift", "horizontal shift (pixels)"), ("noise", "noise std"))):
        c = curves[kind]
        ax.plot(c["level"], c["pixel"], marker="o", label="pixel L2")
        ax.plot(c["level"], c["feature"], marker="s", label=f"{extractor} feature L2")
        ax.axhline(1.0, color="grey", ls="--", lw=0.8, label="two different real images")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("distance to original / between images", fontsize=9)
        titles = {"shift": "shift: the garment is unchanged", "noise": "noise: the image is degraded"}
        ax.set_title(titles[kind], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for kind, marker in (("shift", "o"), ("noise", "s")):
        c = curves[kind]
        top = max(c["level"]) or 1.0
        axes[2].plot([v / top for v in c["level"]], c["fid"], marker=marker, label=f"{kind} (max {top:g})")
    axes[2].set_xlabel("perturbation level / its maximum")
    axes[2].set_ylabel(f"FID vs {cfg.eval.reference} statistics")
    axes[2].set_title("FID of the perturbed set")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"pixel vs {extractor}-feature distance on {cfg.data.subset} Fashion-MNIST {cfg.data.split} "
                 f"images: pixels over-react to shifts and under-react to noise", fontsize=10)
    save_figure(fig, path)


@recipe("pixel-vs-feature",
        "pixel distance: large for an invisible 1-px shift, small for visible noise; features: the opposite",
        PixelFeatureConfig,
        target="1-px shift: pixel/feature distance >= 2.5; noise 0.1: feature/pixel distance >= 1.5",
        main_metric="pixel_over_feature_shift1",
        smoke={"data.subset": 40, "shifts": (0, 1), "noise": (0.0, 0.1), "grid": 4})
class PixelVsFeature(Parts):
    def data(self, cfg: PixelFeatureConfig, seed: int) -> Bundle:
        if not cfg.shifts or not cfg.noise:
            raise UserError("pixel-vs-feature needs at least one shift and one noise level (shifts=..., noise=...)")
        images = load_fashion_mnist(cfg.data.split, cfg.data.path or None).images
        g = torch.Generator().manual_seed(seed)
        x = images[torch.randperm(len(images), generator=g)[:cfg.data.subset]].float() / 255
        info = {"dataset": cfg.data.dataset, "split": cfg.data.split, "images": len(x), "shape": list(x.shape[1:])}
        # the noise continues the subset's random stream, as one generator did before the parts existed
        return Bundle(test=x, info=info, extra={"noise_state": g.get_state()})

    def evaluate(self, cfg: PixelFeatureConfig, run, data: Bundle) -> dict:
        extractor = load_extractor(cfg.eval)
        x = data.test
        g = torch.Generator()
        g.set_state(data.extra["noise_state"])
        phi = extractor.features(x)
        n = len(x)
        pairs = torch.roll(torch.arange(n), 1)             # each image vs a different random real image
        pix_scale, feat_scale = _mean_dist(x, x[pairs]), _mean_dist(phi, phi[pairs])
        mu_ref, sigma_ref = reference_statistics(cfg.eval.reference, extractor)
        metrics = {"pixel_between_images": pix_scale, "feature_between_images": feat_scale}
        curves: dict[str, dict[str, list]] = {"shift": {}, "noise": {}}
        examples = [x[:cfg.grid]]
        levels = [("shift", s, shift_images(x, s)) for s in cfg.shifts]
        levels += [("noise", sig, add_noise(x, sig, g)) for sig in cfg.noise]
        top = {"shift": max(cfg.shifts), "noise": max(cfg.noise)}
        for kind, level, xp in levels:
            phip = extractor.features(xp)
            tag = f"{kind}{level:g}"
            d_pix, d_feat = _mean_dist(x, xp) / pix_scale, _mean_dist(phi, phip) / feat_scale
            fid = fid_from_stats(mu_ref, sigma_ref, *FeatureStats().update(phip).stats())
            metrics.update({f"pixel_rel_{tag}": d_pix, f"feature_rel_{tag}": d_feat, f"fid_{tag}": fid})
            for key, v in (("level", level), ("pixel", d_pix), ("feature", d_feat), ("fid", fid)):
                curves[kind].setdefault(key, []).append(v)
            if level == top[kind] and level > 0:
                examples.append(xp[:cfg.grid])
            run.say(f"{tag:>10s}: pixel distance {d_pix:.3f}, feature distance {d_feat:.3f}, FID {fid:.2f}")
        if 1 in cfg.shifts and metrics["feature_rel_shift1"] > 0:
            metrics["pixel_over_feature_shift1"] = metrics["pixel_rel_shift1"] / metrics["feature_rel_shift1"]
        if 0.1 in cfg.noise and metrics["pixel_rel_noise0.1"] > 0:
            metrics["feature_over_pixel_noise0.1"] = \
                metrics["feature_rel_noise0.1"] / metrics["pixel_rel_noise0.1"]
        _plot_pixel_vs_feature(curves, cfg, cfg.eval.extractor, run.plots / "pixel_vs_feature.png")
        save_image_grid(torch.cat(examples), run.samples / "perturbations.png", nrow=min(cfg.grid, n),
                        value_range=(0, 1))
        return metrics


# --- floor and ceiling --------------------------------------------------------------------------------
@dataclass
class FloorConfig:
    eval: GenerativeEvalConfig = section(GenerativeEvalConfig, "the protocol (fake = a real train subset or "
                                         "noise, eval.samples images per side)", samples=5000)

    MOVED = {"n": "eval.samples", "k": "eval.k", "splits": "eval.splits", "reference": "eval.reference"}


@recipe("gen-eval-floor",
        "generative-metric floor (real train vs test) and ceiling (uniform noise) with protocol",
        FloorConfig,
        target="floor FID < 3 (evaluator features) and ceiling FID > 100x floor", main_metric="floor_fid",
        smoke={"eval.samples": 40, "eval.k": 3, "eval.splits": 2})
class GenEvalFloor(Parts):
    def evaluate(self, cfg: FloorConfig, run, data: Bundle) -> dict:
        e = cfg.eval
        report = reference_report(e.reference, e.samples, e.k, run.seed, e.splits, load_extractor(e))
        text = format_report(report)
        run.say(text)
        write_text(run.path / "report.txt", text + "\n")
        write_json(run.path / "report.json", report)
        metrics = {f"{row}_{key}": report[row][key] for row in ("floor", "ceiling") for key in METRIC_KEYS
                   if report[row][key] is not None}
        metrics["ceiling_over_floor_fid"] = metrics["ceiling_fid"] / max(metrics["floor_fid"], 1e-12)
        return metrics
