"""Throughput of the scratch LSTM/GRU (learnloop.nn) vs torch.nn.LSTM/GRU: forward + backward, one process.

Runs alternate between the two implementations (the CPU may be shared), several repeats each; the ratio
reported is median(scratch tokens/s) / median(torch tokens/s).

    .venv/bin/python bench/bench_recurrent.py              # hidden 256, seq 100, batch 32
    .venv/bin/python bench/bench_recurrent.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from learnloop import nn as lnn


def make(kind: str, impl: str, size: int, hidden: int, layers: int):
    torch.manual_seed(0)
    ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](size, hidden, layers)
    if impl == "torch":
        return ref
    mine = {"lstm": lnn.LSTM, "gru": lnn.GRU, "rnn": lnn.RNN}[kind](size, hidden, layers, impl=impl)
    mine.load_state_dict(ref.state_dict())
    return mine


def step(model, x) -> None:
    out, _ = model(x)
    out.sum().backward()


def measure(model, x, iters: int) -> float:
    """tokens/second over `iters` forward+backward passes."""
    t0 = time.perf_counter()
    for _ in range(iters):
        step(model, x)
    dt = time.perf_counter() - t0
    return iters * x.shape[0] * x.shape[1] / dt


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seq", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input", type=int, default=256, help="input feature size")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--iters", type=int, default=5, help="passes per timed repeat")
    p.add_argument("--kinds", default="lstm,gru")
    p.add_argument("--impls", default="fused,autograd", help="scratch implementations to compare with torch")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (a smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.seq, args.batch, args.input, args.repeats, args.iters = 64, 20, 8, 64, 3, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, hidden {args.hidden}, seq {args.seq}, "
          f"batch {args.batch}, input {args.input}, layers {args.layers}; forward+backward")
    for kind in args.kinds.split(","):
        impls = ["torch", *args.impls.split(",")]
        models = {i: make(kind, i, args.input, args.hidden, args.layers) for i in impls}
        x = torch.randn(args.seq, args.batch, args.input)
        for m in models.values():
            step(m, x)                                                     # warm-up
        speeds = {i: [] for i in impls}
        for _ in range(args.repeats):
            for i in impls:                                                # alternate: same CPU conditions
                speeds[i].append(measure(models[i], x, args.iters))
        med = {i: statistics.median(v) for i, v in speeds.items()}
        for i in impls:
            ratio = med[i] / med["torch"]
            results[f"{kind}_{i}_tokens_per_s"] = round(med[i])
            if i != "torch":
                results[f"{kind}_{i}_ratio"] = round(ratio, 3)
            print(f"{kind:4s} {i:9s} {med[i]:10.0f} tokens/s  ({ratio:.2f}x torch.nn)")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
