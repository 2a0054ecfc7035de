"""Controllable generation with a trained, unconditional generator: normalised gradient ascent in z,

    z <- z + eta * g / ||g||,   g = grad_z [log p_c(G(z)) - anchor * ||z - z0||^2 / dim],

with an attribute classifier c: a class (the guide, a small CNN trained here as stage "guide") or the image
brightness (a pixel statistic is its own scorer). Success is judged by the separate evaluator, not by the
network being climbed: success rate, and entanglement (how much the other attributes and the class move).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learnloop.data.loader import TensorLoader
from learnloop.data.vision import load_fashion_mnist
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.errors import UserError
from learnloop.recipes.base import Bundle, Stage, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.gan.common import SMOKE, GanConfig, classifier
from learnloop.recipes.gan.study import StudyConfig, StudyParts, pixel_attributes, real_test_images
from learnloop.recipes.sections import TrainConfig
from learnloop.utils.images import save_image_grid, to_uint8


@dataclass
class ControllableConfig(StudyConfig):
    edit_samples: int = param(200, "latent vectors to edit", min=10)
    edit_steps: int = param(40, "gradient steps in z", min=1)
    edit_lr: float = param(0.1, "step length in z-space (normalised gradient steps)", min=0.0)
    z_anchor: float = param(1.0, "weight of ||z - z0||^2 / dim keeping the edit close to the start", min=0.0)
    brightness_shift: float = param(1.0, "brightness edit: target change in real-data standard deviations",
                                    min=0.0)
    brightness_success: float = param(0.5, "a brightness edit succeeds when brightness rises by this many "
                                           "standard deviations", min=0.0)
    guide_subset: int = param(20000, "training images for the guide classifier", min=1000)
    guide_dropout: float = param(0.2, "dropout of the guide classifier", min=0.0, max=0.9)
    guide: TrainConfig = section(TrainConfig, "training of the guide (class) classifier that the edit climbs",
                                 epochs=2, batch_size=128, optim=OptimConfig(name="adamw", lr=2e-3),
                                 schedule=ScheduleConfig(kind="one-cycle"))

    MOVED = {**GanConfig.MOVED, "guide_epochs": "guide.epochs"}


def guide_images(cfg: ControllableConfig, seed: int) -> TensorLoader:
    """A seeded subset of the training images in G's range [-1, 1], for the guide classifier."""
    data = load_fashion_mnist("train", cfg.data.path or None)
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 11))[:cfg.guide_subset]

    def transform(batch):
        return batch[0].float().div(127.5).sub(1.0), batch[1]

    return TensorLoader((data.images[keep], data.labels[keep]), cfg.guide.batch_size, True, seed=seed,
                        transform=transform)


def guide_task(cfg: ControllableConfig, info: dict):
    """The attribute classifier used for the gradient: a small CNN on images in G's range [-1, 1], trained
    (stage "guide") so that success is judged by a *different* network (the evaluator), not by the one
    being climbed."""
    from learnloop.models.classic import SmallCNN
    from learnloop.tasks.classification import Classification

    c, h, _ = info["shape"]
    model = SmallCNN(c, len(info["classes"]), dropout=cfg.guide_dropout, image_size=h)
    return Classification(model, len(info["classes"]), cfg.guide.optim)


def edit_latents(g: torch.nn.Module, z0: torch.Tensor, score, steps: int, lr: float, anchor: float,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised gradient ascent in z, per sample (each sample's objective depends on its own z only):
    z <- z + lr * g / ||g||,  g = grad_z [score(G(z)) - anchor * ||z - z0||^2 / dim]."""
    z = z0.clone().requires_grad_(True)
    for _ in range(steps):
        x = g(z, labels)
        objective = score(x) - anchor * (z - z0).pow(2).sum(1) / z.shape[1]
        (grad,) = torch.autograd.grad(objective.sum(), z)
        with torch.no_grad():
            z += lr * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return z.detach()


def _conditional(cfg: StudyConfig, upstream: dict) -> bool:
    gan_run = upstream.get("generator_run")
    return gan_run.cfg.conditional if gan_run is not None else cfg.conditional


@recipe("controllable", "controllable generation: move z along an attribute classifier's gradient",
        ControllableConfig, main_metric="class_edit_success",
        smoke={**SMOKE, "edit_samples": 10, "edit_steps": 2, "guide_subset": 1000, "guide.epochs": 1},
        target="class edits succeed (judged by the evaluator) with small changes of the other attributes")
class Controllable(StudyParts):
    def data(self, cfg: ControllableConfig, seed: int) -> Bundle:
        from learnloop.models.evaluator import load_fashion_evaluator

        bundle = super().data(cfg, seed)
        bundle.extra["guide"] = guide_images(cfg, seed)
        # built before the guide classifier, as before the port: the guide's initialisation depends on the
        # RNG draws of every model built before it (the evaluator's and the generator's, whose weights are
        # then loaded)
        load_fashion_evaluator()
        return bundle

    def stages(self, cfg: ControllableConfig, info: dict, upstream: dict) -> list[Stage]:
        if _conditional(cfg, upstream):
            raise UserError("controllable generation edits an unconditional generator; choose a non-conditional run")
        guide = Stage("guide", lambda trained: guide_task(cfg, info), cfg.guide,
                      loaders=lambda b: (b.extra["guide"], None), monitor=None)
        return [*super().stages(cfg, info, upstream), guide]

    def study(self, cfg: ControllableConfig, run, data, g, gan_run) -> dict:
        import torch.nn.functional as F

        gcfg = gan_run.cfg
        names = list(gan_run.info["classes"])
        k = len(names)
        g.requires_grad_(False)
        guide = run.tasks["guide"].model
        guide.eval()
        guide.requires_grad_(False)
        rows = run.history("guide")
        if rows:
            run.say(f"guide classifier: train accuracy {rows[-1].get('train_accuracy', float('nan')):.3f}")
        ex = classifier(cfg.eval, names)
        gen = torch.Generator().manual_seed(run.seed + 13)
        n = cfg.edit_samples
        z0 = torch.randn(n, gcfg.z_dim, generator=gen)
        with torch.no_grad():
            x0 = to_uint8(g(z0), (-1, 1))
        c0 = ex.probs(x0).argmax(1)
        real_attr = pixel_attributes(real_test_images(cfg).images)
        std = {key: float(v.std()) for key, v in real_attr.items()}
        a0 = pixel_attributes(x0)

        # 1. class edit: log p_guide(target | G(z)), target != current class
        target = (c0 + torch.randint(1, k, (n,), generator=gen)) % k
        z1 = edit_latents(g, z0, lambda x: F.log_softmax(guide(x), 1).gather(1, target[:, None]).squeeze(1),
                          cfg.edit_steps, cfg.edit_lr, cfg.z_anchor)
        with torch.no_grad():
            x1 = to_uint8(g(z1), (-1, 1))
            guide_hit = (guide(x1.float() / 127.5 - 1).argmax(1) == target).float().mean()
        c1 = ex.probs(x1).argmax(1)
        a1 = pixel_attributes(x1)
        metrics = {
            "class_edit_success": float((c1 == target).float().mean()),
            "class_edit_guide_success": float(guide_hit),
            "class_edit_z_distance": float((z1 - z0).norm(dim=1).mean()),
            **{f"class_edit_delta_{key}_std": float((a1[key] - a0[key]).abs().mean() / std[key]) for key in a0}}

        # 2. attribute edit: brightness up by `brightness_shift` real standard deviations (a pixel statistic is
        # its own scorer)
        goal = a0["brightness"] + cfg.brightness_shift * std["brightness"]
        z2 = edit_latents(g, z0, lambda x: -((x.flatten(1).add(1).div(2).mean(1) - goal) / std["brightness"]).pow(2),
                          cfg.edit_steps, cfg.edit_lr, cfg.z_anchor)
        with torch.no_grad():
            x2 = to_uint8(g(z2), (-1, 1))
        a2, c2 = pixel_attributes(x2), ex.probs(x2).argmax(1)
        rise = a2["brightness"] - a0["brightness"]
        metrics.update({
            "brightness_edit_success": float((rise >= cfg.brightness_success * std["brightness"]).float().mean()),
            "brightness_edit_mean_change_std": float(rise.mean() / std["brightness"]),
            "brightness_edit_class_changed": float((c2 != c0).float().mean()),
            "brightness_edit_delta_ink_area_std": float((a2["ink_area"] - a0["ink_area"]).abs().mean()
                                                        / std["ink_area"]),
            "brightness_edit_z_distance": float((z2 - z0).norm(dim=1).mean())})
        shown = min(8, n)
        grid = torch.stack([x0[:shown], x1[:shown], x2[:shown]], 1).flatten(0, 1)
        save_image_grid(grid, run.plots / "edits.png", nrow=3)
        run.say("edits.png: columns = original, class edit (targets "
                + ", ".join(names[int(t)] for t in target[:shown]) + "), brighter")
        run.say(", ".join(f"{key}={v:.3f}" for key, v in metrics.items() if "edit" in key and isinstance(v, float)))
        return metrics
