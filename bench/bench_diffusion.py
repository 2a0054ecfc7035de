"""Diffusion benchmarks (issue E, item 3): engine overhead of a U-Net training step, DDIM sampling speed, and
the FID / precision / recall vs sampling steps curve of a finished `ddpm` run.

    python bench/bench_diffusion.py step                 # (a) Task + Learner vs a hand-written loop (~1 min)
    python bench/bench_diffusion.py speed                # (b) DDIM-50 images/s of the default U-Net (~30 s)
    python bench/bench_diffusion.py curve RUN_DIR --samples 1000 [--ddpm-steps 100,1000] [--ddim-steps 10,20,50,100]
                                         [--compare DCGAN_RUN ...]   # (c) the curve with more samples per point

(a) The recipe's default U-Net (base 32, levels 28/14/7, attention at 7) on Fashion-MNIST batches of 64: the
    DiffusionTask through `Learner.fit` (gradient clipping 1.0, no EMA, no validation, no grids) against the
    same U-Net, same batches and same random draws in a plain PyTorch loop; the runs alternate, ratio of
    medians of CPU seconds per step. Target <= 1.2.
(b) DDIM with 50 trailing steps, `--n` images in batches of `--batch`, wall and CPU images per second
    (random weights: the speed does not depend on them). Sampling is the cost of every evaluation: a curve
    point costs `samples x steps` U-Net calls.
(c) `learnloop.recipes.diffusion.evaluation.steps_curve` on the run's EMA weights with the given sample count,
    written to RUN_DIR/plots/steps_curve.md/.png (as `learnloop eval` does with the run's own settings); with
    `--compare`, GAN runs (dcgan, ...) are scored with the same protocol and N for the table.
Time everything with OMP_NUM_THREADS=1 on a shared machine (1 thread per process is fastest there).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

from learnloop.data.loader import RandomBatches
from learnloop.data.vision import load_fashion_mnist
from learnloop.engine.callbacks import Callback
from learnloop.engine.learner import Learner
from learnloop.engine.optim import OptimConfig
from learnloop.models.diffusion import Diffusion, linear_betas, sample
from learnloop.models.unet import UNet
from learnloop.recipes.base import get_recipe
from learnloop.tasks.diffusion import DiffusionTask


def default_unet(seed: int = 0) -> UNet:
    u = get_recipe("ddpm").config().unet
    torch.manual_seed(seed)
    return UNet(28, 1, base_channels=u.base_channels, channel_mult=u.channel_mult, num_res_blocks=u.num_res_blocks,
                attention_resolutions=u.attention_resolutions, attention_heads=u.attention_heads,
                norm_groups=u.norm_groups)


def _batches(steps: int, batch: int):
    data = load_fashion_mnist("train")
    return RandomBatches(data.images[:20_000], data.labels[:20_000], batch, steps, seed=0)


def engine_steps(steps: int, batch: int) -> float:
    """CPU seconds per step of DiffusionTask + Learner (first step excluded)."""
    d = Diffusion(linear_betas())
    task = DiffusionTask(default_unet(), d, OptimConfig(name="adam", lr=5e-4))
    marks = []

    class StepClock(Callback):
        def on_batch_end(self, learner, outputs):
            marks.append(time.process_time())

    torch.manual_seed(1)
    Learner(task, _batches(steps + 1, batch), epochs=1, clip_grad_norm=1.0, callbacks=[StepClock()],
            monitor=None).fit()
    return (marks[-1] - marks[0]) / steps


def hand_steps(steps: int, batch: int) -> float:
    """CPU seconds per step of the same U-Net in a plain loop (first step excluded)."""
    d = Diffusion(linear_betas())
    model = default_unet()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    abar = d.alphas_cumprod.float()
    torch.manual_seed(1)
    marks = []
    model.train()
    for x0, _ in _batches(steps + 1, batch):
        t = torch.randint(0, d.T, (len(x0),))
        eps = torch.randn_like(x0)
        a = abar[t].view(-1, 1, 1, 1)
        loss = ((model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        marks.append(time.process_time())
    return (marks[-1] - marks[0]) / steps


def bench_step(args) -> None:
    engine, hand = [], []
    for _ in range(args.repeats):
        hand.append(hand_steps(args.steps, args.batch))
        engine.append(engine_steps(args.steps, args.batch))
    e, h = statistics.median(engine), statistics.median(hand)
    print(f"U-Net training step, batch {args.batch}, {args.steps} steps x {args.repeats} repeats (CPU s/step, "
          f"median): engine {e:.3f}, hand-written {h:.3f}, ratio {e / h:.3f} (target <= 1.2); "
          f"{args.batch / e:.1f} images/CPU-s; threads {torch.get_num_threads()}")


def bench_speed(args) -> None:
    model = default_unet().eval()
    d = Diffusion(linear_betas())
    g = torch.Generator().manual_seed(0)
    sample(model, d, (min(args.batch, args.n), 1, 28, 28), steps=2, generator=g)          # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, args.n, args.batch):
        sample(model, d, (min(args.batch, args.n - i), 1, 28, 28), sampler="ddim", steps=50, spacing="trailing",
               generator=g)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"DDIM-50, {args.n} images in batches of {args.batch}: {args.n / wall:.2f} images/s wall, "
          f"{args.n / cpu:.2f} images/CPU-s ({50 * args.n / cpu:.0f} U-Net image-calls/CPU-s); "
          f"threads {torch.get_num_threads()}")


def _gan_scores(path: str, protocol, seed: int) -> dict:
    from learnloop.evaluation.generative import evaluate_generated
    from learnloop.recipes.gan.common import num_classes, sample_images, sampling_generator
    from learnloop.recipes.runs import load_run

    run = load_run(path)
    g, _ = sampling_generator(run, "best")
    fake = sample_images(g, protocol.samples, run.cfg.z_dim, num_classes(run.cfg, run.info), seed=seed + 77)
    result = evaluate_generated(fake, protocol, seed, with_floor=False, with_ceiling=False)
    return {"name": f"{run.recipe.name} ({path})", **{k: result[k] for k in ("fid", "precision", "recall")}}


def bench_curve(args) -> None:
    from learnloop.recipes.diffusion.common import build_diffusion, eval_protocol, sampling_model
    from learnloop.recipes.diffusion.evaluation import steps_curve
    from learnloop.recipes.runs import load_run

    run = load_run(args.run)
    run.quiet = False
    cfg = run.cfg
    curve = dataclasses.replace(cfg.curve, samples=args.samples,
                                ddpm_steps=_ints(args.ddpm_steps) if args.ddpm_steps is not None else cfg.curve.ddpm_steps,
                                ddim_steps=_ints(args.ddim_steps) if args.ddim_steps is not None else cfg.curve.ddim_steps)
    cfg = dataclasses.replace(cfg, curve=curve)
    model, state = sampling_model(run)
    cpu = time.process_time()
    with torch.no_grad():
        metrics = steps_curve(model, build_diffusion(cfg), cfg, run, run.seed)
    print((run.plots / "steps_curve.md").read_text())
    print(f"epoch {state['epoch']}; {(time.process_time() - cpu) / 60:.1f} CPU minutes")
    ddim50, full = metrics.get("curve_ddim50_fid"), metrics.get(f"curve_ddpm{cfg.timesteps}_fid")
    if ddim50 is not None and full is not None:
        print(f"DDIM-50 FID / DDPM-{cfg.timesteps} FID = {ddim50 / full:.3f} (target <= 1.2)")
    for path in args.compare or []:
        r = _gan_scores(path, eval_protocol(cfg, args.samples), run.seed)
        print(f"{r['name']}: FID {r['fid']:.4g}, precision {r['precision']:.3f}, recall {r['recall']:.3f} "
              f"({args.samples} samples, same protocol)")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("step", help="(a) engine vs hand-written training step")
    a.add_argument("--steps", type=int, default=10)
    a.add_argument("--batch", type=int, default=64)
    a.add_argument("--repeats", type=int, default=3)
    b = sub.add_parser("speed", help="(b) DDIM-50 images/s")
    b.add_argument("--n", type=int, default=64)
    b.add_argument("--batch", type=int, default=64)
    c = sub.add_parser("curve", help="(c) FID/precision/recall vs steps of a finished ddpm run")
    c.add_argument("run")
    c.add_argument("--samples", type=int, default=1000)
    c.add_argument("--ddpm-steps", default=None, help="comma-separated (default: the run's curve.ddpm_steps)")
    c.add_argument("--ddim-steps", default=None, help="comma-separated (default: the run's curve.ddim_steps)")
    c.add_argument("--compare", nargs="*", help="GAN run folders scored with the same protocol and N")
    args = p.parse_args(argv)
    {"step": bench_step, "speed": bench_speed, "curve": bench_curve}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
