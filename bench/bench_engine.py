"""Engine benchmarks (issue A): engine overhead vs a hand-written loop, loader vs DataLoader, quickstart time.

    python bench/bench_engine.py            # all three, prints a table (about 2-3 minutes on 2 cores)
    python bench/bench_engine.py --quick    # fewer repeats

1. Overhead: the same MLP (784-512-256-10, BN, dropout) on the same Fashion-MNIST tensors, one epoch per
   repeat, batch 128, AdamW. learnloop's Learner + Classification task (no per-step metric besides the loss)
   vs a plain PyTorch loop; runs alternate in one process; ratio of medians over >= 5 repeats. Target <= 1.05.
2. Loader: one epoch of batches (uint8 -> float, normalise, random horizontal flip) through TensorLoader vs
   torch.utils.data.DataLoader over a per-sample Dataset with per-sample transforms (num_workers=0).
3. Quickstart: wall time of `learnloop run` (mlp-digits) in a fresh process. Target < 60 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from learnloop.data import TensorLoader, image_transform, load_fashion_mnist
from learnloop.engine.optim import OptimConfig
from learnloop.data.augment import random_flip
from learnloop.engine import Learner
from learnloop.models.classic import MLP
from learnloop.tasks import Classification


def make_model(seed=0):
    torch.manual_seed(seed)
    return MLP(784, 10, (512, 256), "relu", True, 0.2)


def hand_loop(x, y, bs, seed):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    t = time.perf_counter()
    for i in range(0, len(x), bs):
        idx = perm[i:i + bs]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def learner_loop(x, y, bs, seed):
    model = make_model()
    task = Classification(model, 10, OptimConfig("adamw", 1e-3), metrics={})
    loader = TensorLoader((x, y), bs, shuffle=True, seed=seed)
    learner = Learner(task, loader, epochs=1, monitor=None)
    t = time.perf_counter()
    learner.fit()
    return time.perf_counter() - t


def overhead(repeats: int):
    d = load_fashion_mnist("train")
    x = (d.images.float() / 255 - 0.286) / 0.353
    y = d.labels
    hand, ours = [], []
    hand_loop(x[:5000], y[:5000], 128, 0)          # warm-up
    learner_loop(x[:5000], y[:5000], 128, 0)
    for r in range(repeats):
        hand.append(hand_loop(x, y, 128, r))
        ours.append(learner_loop(x, y, 128, r))
    h, o = statistics.median(hand), statistics.median(ours)
    return {"hand_s": h, "learnloop_s": o, "ratio": o / h, "img_per_s": len(x) / o}


class PerSample(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float() / 255
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return (x - 0.286) / 0.353, self.labels[i]


def loader_speed(repeats: int):
    d = load_fashion_mnist("train")
    ours, theirs = [], []
    for r in range(repeats):
        loader = TensorLoader((d.images, d.labels), 128, shuffle=True, seed=r,
                              transform=image_transform(0.286, 0.353, random_flip))
        t = time.perf_counter()
        for _ in loader:
            pass
        ours.append(time.perf_counter() - t)
        dl = torch.utils.data.DataLoader(PerSample(d.images, d.labels), batch_size=128, shuffle=True)
        t = time.perf_counter()
        for _ in dl:
            pass
        theirs.append(time.perf_counter() - t)
    o, t = statistics.median(ours), statistics.median(theirs)
    return {"tensorloader_s": o, "dataloader_s": t, "speedup": t / o}


def quickstart():
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "learnloop.cli", "run", "--out", tmp], check=True,
                       capture_output=True)
        return {"quickstart_s": time.perf_counter() - t}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    ap.add_argument("--only", choices=("overhead", "loader", "quickstart"))
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    results = {}
    if args.only in (None, "overhead"):
        results["overhead"] = overhead(max(reps, 5))
    if args.only in (None, "loader"):
        results["loader"] = loader_speed(reps)
    if args.only in (None, "quickstart"):
        results["quickstart"] = quickstart()
    for name, r in results.items():
        print(name + ": " + ", ".join(f"{k}={v:.4g}" for k, v in r.items()))


if __name__ == "__main__":
    main()
