"""Mode coverage and biases of a trained generator: class frequencies of its samples against real test
images, both seen through the evaluation classifier (so its own errors cancel), and the quartile bins of
pixel attributes the classes cannot show (brightness, ink area). Classes or bins outside 1 +- `tolerance`
of the real frequency, or below `min_fraction`, are flagged under-/over-represented: mode collapse and bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from learnloop.recipes.base import recipe
from learnloop.recipes.config import param
from learnloop.recipes.gan.common import classifier, num_classes, sample_images, seeded_subset
from learnloop.recipes.gan.study import STUDY_SMOKE, StudyConfig, StudyParts, pixel_attributes, real_test_images


@dataclass
class BiasProbeConfig(StudyConfig):
    study_samples: int = param(10000, "generated samples to probe", min=100)
    tolerance: float = param(0.3, "flag a class/bin whose frequency ratio generated/real is outside 1 +- this",
                             min=0.0, max=1.0)
    min_fraction: float = param(0.03, "flag a class below this fraction of the samples", min=0.0, max=1.0)
    low_confidence: float = param(0.5, "a sample is low-confidence when the evaluator's top probability is "
                                       "below this", min=0.0, max=1.0)
    real_subset: int = param(0, "compare with this many real test images, a seeded subset (0: all)", min=0)


def frequency_table(real: torch.Tensor, fake: torch.Tensor, names: list[str], tolerance: float,
                    min_fraction: float = 0.0) -> list[dict]:
    """Rows (name, real fraction, generated fraction, ratio, flag) for two frequency vectors."""
    rows = []
    for name, r, f in zip(names, real.tolist(), fake.tolist()):
        ratio = f / r if r > 0 else math.inf
        flag = ""
        if ratio < 1 - tolerance or f < min_fraction:
            flag = "under"
        elif ratio > 1 + tolerance:
            flag = "over"
        rows.append({"name": name, "real": r, "generated": f, "ratio": ratio, "flag": flag})
    return rows


def _markdown(rows: list[dict], title: str) -> str:
    out = [f"### {title}", "", "| | real | generated | ratio | flag |", "|---|---:|---:|---:|---|"]
    out += [f"| {r['name']} | {r['real']:.3f} | {r['generated']:.3f} | {r['ratio']:.2f} | {r['flag']} |"
            for r in rows]
    return "\n".join(out) + "\n"


def _grouped_bars(groups: dict[str, list[float]], labels: list[str], path: Path, ylabel: str, title: str,
                  hline: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from learnloop.utils.io import save_figure

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 4))
    width = 0.8 / len(groups)
    for i, (name, values) in enumerate(groups.items()):
        ax.bar([j + (i - (len(groups) - 1) / 2) * width for j in range(len(labels))], values, width, label=name)
    if hline is not None:
        ax.axhline(hline, color="red", lw=1, ls="--", label=f"{hline:g}")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@recipe("gan-bias-probe", "probe a GAN's mode coverage and biases with the evaluation classifier",
        BiasProbeConfig, main_metric="min_class_fraction", smoke={**STUDY_SMOKE, "real_subset": 1000},
        target="all 10 classes present, none under 3% of 10k samples; flags under/over-represented modes")
class BiasProbe(StudyParts):
    def study(self, cfg: BiasProbeConfig, run, data, g, gan_run) -> dict:
        from learnloop.utils.io import write_text

        gcfg = gan_run.cfg
        names = list(gan_run.info["classes"])
        fake = sample_images(g, cfg.study_samples, gcfg.z_dim, num_classes(gcfg, gan_run.info), seed=run.seed + 9)
        real = seeded_subset(real_test_images(cfg), cfg.real_subset, run.seed)
        ex = classifier(cfg.eval, names)
        p_fake, p_real = ex.probs(fake), ex.probs(real.images)
        # the classifier's own errors cancel when both sides are seen through it
        h_fake = torch.bincount(p_fake.argmax(1), minlength=len(names)).double() / len(fake)
        h_real = torch.bincount(p_real.argmax(1), minlength=len(names)).double() / len(real)
        classes = frequency_table(h_real, h_fake, names, cfg.tolerance, cfg.min_fraction)
        report = [_markdown(classes, "class frequencies (evaluation classifier's argmax)")]
        conf_fake, conf_real = p_fake.max(1).values, p_real.max(1).values
        metrics = {"min_class_fraction": float(h_fake.min()), "classes_present": int((h_fake > 0).sum()),
                   "classes_under_min_fraction": int((h_fake < cfg.min_fraction).sum()),
                   "class_tv_distance": float(0.5 * (h_fake - h_real).abs().sum()),
                   "low_confidence_fraction": float((conf_fake < cfg.low_confidence).float().mean()),
                   "real_low_confidence_fraction": float((conf_real < cfg.low_confidence).float().mean())}
        metrics.update({f"class_fraction_{i}": float(h) for i, h in enumerate(h_fake)})
        metrics["under_represented"] = ", ".join(r["name"] for r in classes if r["flag"] == "under")
        metrics["over_represented"] = ", ".join(r["name"] for r in classes if r["flag"] == "over")
        # attributes: frequencies of the real data's quartile bins
        a_real, a_fake = pixel_attributes(real.images), pixel_attributes(fake)
        flagged_bins = 0
        for name in a_real:
            edges = torch.quantile(a_real[name], torch.tensor([0.25, 0.5, 0.75]))
            bins_r = torch.bincount(torch.bucketize(a_real[name], edges), minlength=4).double() / len(real)
            bins_f = torch.bincount(torch.bucketize(a_fake[name], edges), minlength=4).double() / len(fake)
            rows = frequency_table(bins_r, bins_f, [f"{name} Q{i + 1}" for i in range(4)], cfg.tolerance)
            flagged_bins += sum(bool(r["flag"]) for r in rows)
            report.append(_markdown(rows, f"{name} (real quartile bins; real mean {float(a_real[name].mean()):.3f}, "
                                          f"generated mean {float(a_fake[name].mean()):.3f})"))
            metrics[f"{name}_shift_std"] = float((a_fake[name].mean() - a_real[name].mean()) / a_real[name].std())
            _grouped_bars({"real": bins_r.tolist(), "generated": bins_f.tolist()}, [r["name"] for r in rows],
                          run.plots / f"bias_{name}.png", "fraction", f"{name}: real quartile bins")
        metrics["attribute_bins_flagged"] = flagged_bins
        _grouped_bars({"real (classified)": h_real.tolist(), "generated": h_fake.tolist()}, names,
                      run.plots / "bias_classes.png", "fraction", "class frequencies", hline=cfg.min_fraction)
        text = "\n".join(report)
        write_text(run.plots / "bias_probe.md", text)
        run.say(text)
        return metrics
