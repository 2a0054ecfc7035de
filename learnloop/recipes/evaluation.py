"""Recipes about *measuring* generative models (no training): why features, and what the numbers mean.

- `pixel-vs-feature`: perturb real test images by small translations (s pixels, zero fill) and additive
  Gaussian noise (x' = clip(x + sigma eps, 0, 1)); for each level report the mean distance to the original,
      pixel:    d_pix  = mean_i ||x_i - x'_i||_2 / mean_i ||x_i - x_pi(i)||_2
      feature:  d_feat = mean_i ||phi(x_i) - phi(x'_i)||_2 / mean_i ||phi(x_i) - phi(x_pi(i))||_2
  where pi pairs each image with another random real image, so 1.0 means "as far apart as two different
  garments". Measured with the shipped evaluator phi (`learnloop.models.evaluator`): a 1-pixel shift, which
  leaves the garment unchanged, moves pixel distance ~3x more than feature distance; additive noise, which
  visibly degrades the image, does the opposite (sigma = 0.1 moves features ~2x more than pixels; the
  evaluator never saw noise, Fashion-MNIST backgrounds are exactly 0). Pixel distance thus ranks an
  invisible change above a visible one; features rank them the way a person would, which is why FID, KID
  and PRDC compare features (Heusel et al., 2017, showed FID rising with noise, blur and other disturbances).
  FID of each perturbed set against the test statistics is reported too.
- `gen-eval-floor`: the reference rows every generative result is read against (see
  `learnloop.evaluation.generative`): real train images scored as if generated (the floor) and uniform noise
  (the ceiling), with the exact protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from learnloop.data.vision import load_fashion_mnist
from learnloop.evaluation.generative import format_report, reference_report
from learnloop.metrics.generative import FeatureStats, fid_from_stats
from learnloop.models.evaluator import load_fashion_evaluator, reference_stats
from learnloop.recipes.base import RunContext, recipe
from learnloop.recipes.config import param
from learnloop.utils.images import save_image_grid
from learnloop.utils.io import save_figure, write_json, write_text

METRIC_KEYS = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "density",
               "coverage")


# --- pixel vs feature ---------------------------------------------------------------------------------
@dataclass
class PixelFeatureConfig:
    n: int = param(1000, "test images to perturb", min=20, max=10000)
    shifts: tuple[int, ...] = param((0, 1, 2, 3), "horizontal translations in pixels", min=0, max=14)
    noise: tuple[float, ...] = param((0.0, 0.05, 0.1, 0.2, 0.3), "Gaussian noise std (images in [0, 1])",
                                     min=0.0, max=2.0)


def shift_images(x: torch.Tensor, s: int) -> torch.Tensor:
    """Translate right by s pixels; the uncovered columns are black (0)."""
    if s == 0:
        return x.clone()
    return F.pad(x, (s, 0))[..., :x.shape[-1]]


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    return (x + sigma * torch.randn(x.shape, generator=generator)).clamp(0, 1)


def _mean_dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.flatten(1).double() - b.flatten(1).double()).norm(dim=1).mean())


@recipe("pixel-vs-feature",
        "pixel distance: large for an invisible 1-px shift, small for visible noise; features: the opposite",
        PixelFeatureConfig, family="generative",
        target="1-px shift: pixel/feature distance >= 2.5; noise 0.1: feature/pixel distance >= 1.5",
        main_metric="pixel_over_feature_shift1")
def pixel_vs_feature(cfg: PixelFeatureConfig, ctx: RunContext) -> dict:
    model = load_fashion_evaluator()
    images = load_fashion_mnist("test").images
    g = torch.Generator().manual_seed(ctx.seed)
    x = images[torch.randperm(len(images), generator=g)[:cfg.n]].float() / 255
    phi = model.features(x)
    pairs = torch.roll(torch.arange(cfg.n), 1)             # each image vs a different random real image
    pix_scale, feat_scale = _mean_dist(x, x[pairs]), _mean_dist(phi, phi[pairs])
    mu_ref, sigma_ref = reference_stats("test")
    metrics = {"pixel_between_images": pix_scale, "feature_between_images": feat_scale}
    curves: dict[str, dict[str, list]] = {"shift": {}, "noise": {}}
    examples = [x[:8]]
    levels = [("shift", s, shift_images(x, s)) for s in cfg.shifts]
    levels += [("noise", sig, add_noise(x, sig, g)) for sig in cfg.noise]
    for kind, level, xp in levels:
        phip = model.features(xp)
        tag = f"{kind}{level:g}"
        d_pix, d_feat = _mean_dist(x, xp) / pix_scale, _mean_dist(phi, phip) / feat_scale
        fid = fid_from_stats(mu_ref, sigma_ref, *FeatureStats().update(phip).stats())
        metrics.update({f"pixel_rel_{tag}": d_pix, f"feature_rel_{tag}": d_feat, f"fid_{tag}": fid})
        for key, v in (("level", level), ("pixel", d_pix), ("feature", d_feat), ("fid", fid)):
            curves[kind].setdefault(key, []).append(v)
        if level in (max(cfg.shifts), max(cfg.noise)) and level > 0:
            examples.append(xp[:8])
        ctx.say(f"{tag:>10s}: pixel distance {d_pix:.3f}, feature distance {d_feat:.3f}, FID {fid:.2f}")
    if 1 in cfg.shifts and metrics["feature_rel_shift1"] > 0:
        metrics["pixel_over_feature_shift1"] = metrics["pixel_rel_shift1"] / metrics["feature_rel_shift1"]
    if 0.1 in cfg.noise and metrics["pixel_rel_noise0.1"] > 0:
        metrics["feature_over_pixel_noise0.1"] = \
            metrics["feature_rel_noise0.1"] / metrics["pixel_rel_noise0.1"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (kind, xlabel) in zip(axes[:2], (("shift", "horizontal shift (pixels)"), ("noise", "noise std"))):
        c = curves[kind]
        ax.plot(c["level"], c["pixel"], marker="o", label="pixel L2")
        ax.plot(c["level"], c["feature"], marker="s", label="evaluator feature L2")
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
    axes[2].set_ylabel("FID vs test statistics")
    axes[2].set_title("FID of the perturbed set")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"pixel vs evaluator-feature distance on {cfg.n} Fashion-MNIST test images: "
                 f"pixels over-react to shifts and under-react to noise", fontsize=10)
    save_figure(fig, ctx.run.plots / "pixel_vs_feature.png")
    save_image_grid(torch.cat(examples), ctx.run.samples / "perturbations.png", nrow=8, value_range=(0, 1))
    return metrics


# --- floor and ceiling --------------------------------------------------------------------------------
@dataclass
class FloorConfig:
    n: int = param(5000, "images per side (fake = real train subset or noise)", min=20, max=10000)
    k: int = param(5, "k of the k-NN radii (precision/recall/density/coverage)", min=1, max=50)
    splits: int = param(10, "Inception Score splits", min=1, max=50)
    reference: str = param("test", "reference split", choices=("test", "train"))


@recipe("gen-eval-floor",
        "generative-metric floor (real train vs test) and ceiling (uniform noise) with protocol",
        FloorConfig, family="generative",
        target="floor FID < 3 (evaluator features) and ceiling FID > 100x floor", main_metric="floor_fid")
def gen_eval_floor(cfg: FloorConfig, ctx: RunContext) -> dict:
    report = reference_report(cfg.reference, cfg.n, cfg.k, ctx.seed, cfg.splits)
    text = format_report(report)
    ctx.say(text)
    write_text(ctx.run.path / "report.txt", text + "\n")
    write_json(ctx.run.path / "report.json", report)
    metrics = {f"{row}_{key}": report[row][key] for row in ("floor", "ceiling") for key in METRIC_KEYS}
    metrics["ceiling_over_floor_fid"] = metrics["ceiling_fid"] / max(metrics["floor_fid"], 1e-12)
    return metrics
