"""Train the Fashion-MNIST evaluator that scores generative models, and write its package assets.

    .venv/bin/python bench/train_evaluator.py                # full: 20 epochs, writes learnloop/assets/
    .venv/bin/python bench/train_evaluator.py --quick        # 1 epoch on 6k images into /tmp (smoke test)
    .venv/bin/python bench/train_evaluator.py --stats-only   # recompute reference statistics from the weights

Writes (into --out, default learnloop/assets/):
  fashion_evaluator.safetensors        the FashionEvaluator state dict (float32)
  fashion_evaluator_stats.safetensors  {train,test}_{mu,sigma} (float64) of the 256-d penultimate features
  fashion_evaluator.json               test accuracy, command, seed, hyper-parameters, timings

Training: AdamW with one-cycle learning rate (Smith, 2018), random horizontal flip + 2-pixel random crop,
fixed number of epochs; the *last* weights are kept (the test split is only reported, never used to select).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learnloop.data.augment import standard
from learnloop.data.loader import TensorLoader, image_transform
from learnloop.data.vision import load_fashion_mnist
from learnloop.engine.callbacks import Callback
from learnloop.engine.learner import Learner
from learnloop.engine.optim import OptimConfig
from learnloop.engine.schedules import ScheduleConfig
from learnloop.models.evaluator import CARD_FILE, STATS_FILE, WEIGHTS_FILE, FashionEvaluator
from learnloop.tasks.classification import Classification
from learnloop.utils.io import atomic_path, write_json
from learnloop.utils.seed import seed_everything


class PrintEpoch(Callback):
    def on_epoch_end(self, learner, metrics):
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                          if k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"))
        print(f"epoch {metrics['epoch']}/{learner.epochs}  {shown}  ({metrics['time']:.0f}s)", flush=True)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp))
    path.chmod(0o644)               # package data: readable by everyone (temp files are created 0600)


def write_stats(model: FashionEvaluator, out: Path, limit: int | None = None) -> dict:
    from learnloop.metrics.generative import feature_stats

    stats, sizes = {}, {}
    for split in ("train", "test"):
        images = load_fashion_mnist(split).images[:limit]
        mu, sigma = feature_stats(model.features(images))
        stats[f"{split}_mu"], stats[f"{split}_sigma"] = mu, sigma
        sizes[split] = len(images)
    save_tensors(out / STATS_FILE, stats)
    return sizes


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--augment", default="flip+crop")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "learnloop" / "assets")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0 = torch's default); 1 is much faster on an oversubscribed CPU")
    p.add_argument("--quick", action="store_true", help="1 epoch on 6,000 images, written to /tmp")
    p.add_argument("--stats-only", action="store_true", help="only recompute the reference statistics")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.out = 1, Path("/tmp/learnloop_evaluator_quick")
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python bench/train_evaluator.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stats_only:
        from learnloop.models.evaluator import load_fashion_evaluator

        model = load_fashion_evaluator(args.out / WEIGHTS_FILE)
        print("stats:", write_stats(model, args.out))
        return

    seed_everything(args.seed)
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    if args.quick:
        train = train.subset(torch.arange(6000))
    model = FashionEvaluator(dropout=args.dropout).to(memory_format=torch.channels_last)
    task = Classification(model, 10, OptimConfig("adamw", args.lr, args.weight_decay))
    train_loader = TensorLoader((train.images, train.labels), args.batch_size, shuffle=True, seed=args.seed,
                                transform=image_transform(augment=standard(args.augment)))
    test_loader = TensorLoader((test.images, test.labels), 1000, transform=image_transform())
    learner = Learner(task, train_loader, test_loader, epochs=args.epochs, callbacks=[PrintEpoch()],
                      schedule=ScheduleConfig(kind="one-cycle", pct_start=0.25), monitor=None)
    t0 = time.perf_counter()
    learner.fit()
    train_time = time.perf_counter() - t0
    model.eval()
    final = learner.validate(test_loader, "test")
    save_tensors(args.out / WEIGHTS_FILE, model.state_dict())
    t1 = time.perf_counter()
    sizes = write_stats(model, args.out)
    card = {
        "model": "learnloop.models.evaluator.FashionEvaluator", "feature_dim": model.feature_dim,
        "test_accuracy": round(final["test_accuracy"], 5), "test_loss": round(final["test_loss"], 5),
        "test_macro_f1": round(final["test_macro_f1"], 5), "train_images": len(train),
        "stats_images": sizes, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "augment": args.augment, "dropout": args.dropout,
        "schedule": "one-cycle (pct_start 0.25)",
        "optimizer": "adamw", "seed": args.seed, "threads": torch.get_num_threads(),
        "train_seconds": round(train_time, 1),
        "stats_seconds": round(time.perf_counter() - t1, 1), "torch": torch.__version__, "command": command,
        "history": [{k: round(v, 5) if isinstance(v, float) else v for k, v in h.items()}
                    for h in learner.history],
    }
    write_json(args.out / CARD_FILE, card)
    (args.out / CARD_FILE).chmod(0o644)
    print(f"test accuracy {final['test_accuracy']:.4f}; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
