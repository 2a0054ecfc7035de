"""Evaluation of a text-to-image run vs the classifier-free guidance scale w (Ho & Salimans, 2022, fig. 1-2:
guidance trades sample diversity, i.e. FID and recall, for agreement with the prompt).

For every w of `eval.guidance_scales` (and the default `guidance`): `eval.per_class` images per class from
the prompt `eval.template` with the class's name ("a photo of a sneaker"), the same starting noise at every
w, sampled with the `sampler` settings from the EMA weights and decoded by the VAE, then

- agreement: the share of images the shipped Fashion-MNIST evaluator (learnloop.models.evaluator, the
  extractor `eval.extractor`, which must classify the 10 classes) assigns to the prompted class, overall and
  per class; beside it the evaluator's accuracy on as many real test images per class (the most agreement
  can be) and chance, 1 / classes;
- FID, precision, recall, density, coverage of all K * per_class images by learnloop.evaluation.generative
  with the protocol of the `eval` section at that N, with its real-data floor and noise ceiling rows.

Files: plots/guidance.md (the table), plots/guidance.png (agreement and FID vs w), plots/samples_w<w>.png (a
grid per scale, one row per class, `eval.grid_columns` images each). Metrics: w<w>_agreement, w<w>_fid, ...
("w2p5" for w = 2.5), floor_* / ceiling_* / real_agreement, and agreement / fid / precision / recall at the
default guidance.
"""

from __future__ import annotations

import time

import torch

from learnloop.data.vision import load_fashion_mnist
from learnloop.evaluation.generative import GenerativeEvalConfig, evaluate_generated
from learnloop.recipes.diffusion.latent import grid_prompts
from learnloop.recipes.gan.common import classifier
from learnloop.utils.images import save_image_grid
from learnloop.utils.io import save_figure, write_text

SAMPLE_SEED_OFFSET = 77
SCORES = ("fid", "precision", "recall", "density", "coverage")


def tag(w: float) -> str:
    """A metric-name form of a scale: 3 -> "w3", 2.5 -> "w2p5"."""
    return "w" + f"{w:g}".replace(".", "p").replace("-", "m")


def scales(cfg) -> list[float]:
    return sorted({float(w) for w in cfg.eval.guidance_scales} | {float(cfg.guidance)})


def protocol(cfg, n: int) -> GenerativeEvalConfig:
    e = cfg.eval
    return GenerativeEvalConfig(extractor=e.extractor, weights=e.weights, reference=e.reference, samples=n, k=e.k,
                                splits=e.splits)


def real_agreement(judge, cfg, classes: int) -> float:
    """The evaluator's accuracy on the first `eval.per_class` real images of each class of the reference split."""
    data = load_fashion_mnist(cfg.eval.reference, cfg.data.path or None)
    keep = torch.cat([torch.nonzero(data.labels == c).flatten()[:cfg.eval.per_class] for c in range(classes)])
    pred = judge.probs(data.images[keep]).argmax(1)
    return float((pred == data.labels[keep]).float().mean())


def class_grid(images: torch.Tensor, per_class: int, columns: int) -> torch.Tensor:
    """The first `columns` images of each class (class-major input): one row per class."""
    k = len(images) // per_class
    return images.view(k, per_class, *images.shape[1:])[:, :columns].reshape(-1, *images.shape[1:])


def evaluate_guidance(cfg, run, sampler, seed: int) -> dict:
    """The guidance sweep of the module docstring; `sampler` is the run's PromptSampler."""
    classes = run.info["classes"]
    K, n = len(classes), cfg.eval.per_class
    judge = classifier(cfg.eval, classes)
    prompts = grid_prompts(run.info, cfg.eval.template, n)
    labels = torch.arange(K).repeat_interleave(n)
    proto = protocol(cfg, K * n)
    rows, floor, ceiling = [], None, None
    for i, w in enumerate(scales(cfg)):
        wall, cpu = time.perf_counter(), time.process_time()
        images = sampler.images(prompts, w, seed + SAMPLE_SEED_OFFSET)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        hit = (judge.probs(images).argmax(1) == labels).float()
        result = evaluate_generated(images, proto, seed, value_range=(0.0, 1.0), with_floor=i == 0,
                                    with_ceiling=i == 0)
        if i == 0:
            floor, ceiling = result["floor"], result["ceiling"]
        row = {"guidance": w, "agreement": float(hit.mean()), **{m: float(result[m]) for m in SCORES},
               **{f"agreement_{c}": float(hit[labels == c].mean()) for c in range(K)},
               "images_per_s": len(images) / wall, "images_per_cpu_s": len(images) / cpu}
        rows.append(row)
        save_image_grid(class_grid(images, n, cfg.eval.grid_columns), run.plots / f"samples_{tag(w)}.png",
                        nrow=min(n, cfg.eval.grid_columns), value_range=(0.0, 1.0))
        run.say(f"guidance {w:g}: agreement {row['agreement']:.3f}, FID {row['fid']:.4g}, precision "
                f"{row['precision']:.3f}, recall {row['recall']:.3f} ({len(images)} images, {wall:.0f} s)")
    real = real_agreement(judge, cfg, K)
    metrics = {f"{tag(r['guidance'])}_{k}": v for r in rows for k, v in r.items() if k != "guidance"}
    for name, ref in (("floor", floor), ("ceiling", ceiling)):
        metrics.update({f"{name}_{m}": float(ref[m]) for m in SCORES})
    default = next(r for r in rows if r["guidance"] == float(cfg.guidance))
    metrics.update({"agreement": default["agreement"], "fid": default["fid"], "precision": default["precision"],
                    "recall": default["recall"], "real_agreement": real, "eval_images_per_scale": K * n})
    _write_table(rows, floor, ceiling, real, cfg, run, K * n)
    _plot(rows, floor, ceiling, real, 1.0 / K, run.plots / "guidance.png", K * n, cfg.guidance)
    return metrics


def _write_table(rows, floor, ceiling, real, cfg, run, n: int) -> None:
    s = cfg.sampler
    head = ["guidance", "agreement", *SCORES, "images/s", "images/CPU-s"]
    lines = [f"# Classifier-free guidance vs agreement and sample quality ({n} images per row: {cfg.eval.per_class} "
             f"per class from '{cfg.eval.template}'; {s.kind} {s.steps} steps, {s.spacing} spacing; extractor "
             f"{cfg.eval.extractor}, reference {cfg.eval.reference}, k {cfg.eval.k}; default guidance "
             f"{cfg.guidance:g})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['guidance']:g}", f"{r['agreement']:.3f}", *(f"{r[m]:.4g}" for m in SCORES),
                 f"{r['images_per_s']:.3g}", f"{r['images_per_cpu_s']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(["real images (floor)", f"{real:.3f}", *(f"{floor[m]:.4g}" for m in SCORES),
                                    "-", "-"]) + " |")
    lines.append("| " + " | ".join(["noise (ceiling)", "-", *(f"{ceiling[m]:.4g}" for m in SCORES), "-", "-"]) + " |")
    write_text(run.plots / "guidance.md", "\n".join(lines) + "\n")


def _plot(rows, floor, ceiling, real, chance, path, n: int, default: float) -> None:
    """Agreement and FID vs w, with the real-image and chance levels and the floor / ceiling FIDs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [r["guidance"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ws, [r["agreement"] for r in rows], marker="o", label="generated")
    a.hlines([real, chance], min(ws), max(ws), colors="grey", linestyles=["--", ":"])
    a.text(min(ws), real, " real images", va="bottom", fontsize=8, color="grey")
    a.text(min(ws), chance, " chance", va="bottom", fontsize=8, color="grey")
    a.set_ylim(0, 1.05)
    a.set_ylabel("share classified as the prompted class")
    b.plot(ws, [r["fid"] for r in rows], marker="o", label="generated")
    b.hlines([floor["fid"], ceiling["fid"]], min(ws), max(ws), colors="grey", linestyles=["--", ":"])
    b.text(min(ws), floor["fid"], " floor (real)", va="bottom", fontsize=8, color="grey")
    b.text(min(ws), ceiling["fid"], " ceiling (noise)", va="top", fontsize=8, color="grey")
    b.set_yscale("log")
    b.set_ylabel("FID")
    for ax, title in ((a, "agreement"), (b, "FID")):
        ax.axvline(default, color="grey", alpha=0.3)
        ax.set_xlabel("guidance scale w")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.suptitle(f"classifier-free guidance ({n} images per point)", fontsize=10)
    save_figure(fig, path)
