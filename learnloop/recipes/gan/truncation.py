"""The truncation trick (Brock, Donahue & Simonyan, 2019) on a trained generator: z is drawn from N(0, I)
truncated to |z_i| <= t, and precision (fidelity) should rise while recall (diversity) falls as t tightens.
Each level is scored with the evaluator's features (learnloop.evaluation.generative.evaluate_images)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from learnloop.evaluation.generative import load_extractor
from learnloop.recipes.base import recipe
from learnloop.recipes.config import param
from learnloop.recipes.gan.common import num_classes, sample_images
from learnloop.recipes.gan.study import STUDY_SMOKE, StudyConfig, StudyParts
from learnloop.utils.images import save_image_grid


@dataclass
class TruncationConfig(StudyConfig):
    truncations: tuple[float, ...] = param((0.0, 2.0, 1.5, 1.0, 0.75, 0.5, 0.25),
                                           "truncation thresholds t, loosest first (0: no truncation)", min=0.0)
    study_samples: int = param(5000, "samples per truncation level", min=100)


def _monotone_fraction(values: list[float], rising: bool) -> float:
    steps = list(itertools.pairwise(values))
    good = sum((b > a) if rising else (b < a) for a, b in steps)
    return good / max(len(steps), 1)


@recipe("truncation", "truncation trick (Brock et al., 2019): precision vs recall as the noise is truncated",
        TruncationConfig, main_metric="precision_gain", target="precision rises and recall falls as truncation "
        "tightens", smoke={**STUDY_SMOKE, "truncations": "0,1,0.25"})
class Truncation(StudyParts):
    def study(self, cfg: TruncationConfig, run, data, g, gan_run) -> dict:
        from learnloop.evaluation.generative import evaluate_images
        from learnloop.utils.plots import plot_lines

        gcfg = gan_run.cfg
        k = num_classes(gcfg, gan_run.info)
        levels = sorted(cfg.truncations, key=lambda t: -math.inf if t <= 0 else -t)   # none, then tighter
        rows, metrics = [], {}
        for t in levels:
            fake = sample_images(g, cfg.study_samples, gcfg.z_dim, k, truncation=t if t > 0 else None,
                                 seed=run.seed + 5)
            r = evaluate_images(fake, cfg.eval.reference, k=cfg.eval.k, seed=run.seed, splits=cfg.eval.splits,
                                extractor=load_extractor(cfg.eval), with_floor=False, with_ceiling=False)
            rows.append({"t": t, **{key: r[key] for key in ("fid", "precision", "recall", "density", "coverage")},
                         "min_class_fraction": min(r["class_hist"])})
            tag = "none" if t <= 0 else f"{t:g}"
            run.say(f"truncation {tag}: precision {r['precision']:.3f} recall {r['recall']:.3f} FID {r['fid']:.2f}")
            save_image_grid(fake[:64], run.plots / f"samples_truncation_{tag}.png", nrow=8)
            for key in ("fid", "precision", "recall", "density", "coverage", "min_class_fraction"):
                metrics[f"t{tag}_{key}"] = rows[-1][key]
        plot_lines({"precision vs recall": ([r["recall"] for r in rows], [r["precision"] for r in rows])},
                   run.plots / "truncation_precision_recall.png", "recall (diversity)", "precision (fidelity)",
                   "truncation: " + ", ".join("none" if r["t"] <= 0 else f"{r['t']:g}" for r in rows))
        xs = list(range(len(rows)))
        plot_lines({key: (xs, [r[key] for r in rows]) for key in ("precision", "recall", "density", "coverage")},
                   run.plots / "truncation_sweep.png", "truncation level index (0 = none, tighter to the right)",
                   "value", "truncation sweep")
        metrics.update({
            "precision_rises": _monotone_fraction([r["precision"] for r in rows], True),
            "recall_falls": _monotone_fraction([r["recall"] for r in rows], False),
            "precision_gain": rows[-1]["precision"] - rows[0]["precision"],
            "recall_loss": rows[0]["recall"] - rows[-1]["recall"]})
        return metrics
