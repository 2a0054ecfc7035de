"""Throughput of the scratch LSTM/GRU (learnloop.nn) vs torch.nn.LSTM/GRU: forward + backward, one process.

Runs alternate between the implementations (the CPU may be shared), several repeats each. Two ratios are
reported: median(scratch tokens/s) / median(torch tokens/s), and the median of the per-repeat ratios
(each repeat times both sides back to back, so it is less sensitive to load changing during the run),
with that ratio's min-max over the repeats; best/best compares the fastest repeat of each side (the
least disturbed one when other processes share the CPU).

    .venv/bin/python bench/bench_recurrent.py --impls fused --threads 1      # hidden 256, seq 100, batch 32
    .venv/bin/python bench/bench_recurrent.py --impls fused --threads 1,2 --kinds lstm,bilstm,gru
    .venv/bin/python bench/bench_recurrent.py --quick

Kinds: lstm, gru, rnn, and bilstm / bigru / birnn for the bidirectional layers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from learnloop import nn as lnn

TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
SCRATCH = {"lstm": lnn.LSTM, "gru": lnn.GRU, "rnn": lnn.RNN}


def make(kind: str, impl: str, size: int, hidden: int, layers: int):
    """kind is lstm/gru/rnn, optionally prefixed with 'bi' (bidirectional); impl 'torch' or a scratch impl."""
    base, bidir = kind.removeprefix("bi"), kind.startswith("bi")
    if base not in TORCH:
        raise SystemExit(f"unknown kind '{kind}': choose from lstm, gru, rnn (optionally prefixed with bi)")
    torch.manual_seed(0)
    ref = TORCH[base](size, hidden, layers, bidirectional=bidir)
    if impl == "torch":
        return ref
    mine = SCRATCH[base](size, hidden, layers, bidirectional=bidir, impl=impl)
    mine.load_state_dict(ref.state_dict())
    return mine


def step(model, x) -> None:
    out, _ = model(x)
    out.sum().backward()


def measure(model, x, iters: int, warmup: int) -> float:
    """tokens/second over `iters` forward+backward passes, after `warmup` untimed ones (switching between
    implementations leaves the allocator and caches in the other one's state: its first pass pays for it)."""
    for _ in range(warmup):
        step(model, x)
    t0 = time.perf_counter()
    for _ in range(iters):
        step(model, x)
    dt = time.perf_counter() - t0
    return iters * x.shape[0] * x.shape[1] / dt


def run(args, threads: int) -> dict:
    torch.set_num_threads(threads)
    results = {}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, hidden {args.hidden}, seq {args.seq}, "
          f"batch {args.batch}, input {args.input}, layers {args.layers}; forward+backward, "
          f"{args.repeats} repeats x {args.iters} passes (+{args.warmup} untimed)")
    for kind in args.kinds.split(","):
        impls = ["torch", *args.impls.split(",")]
        models = {i: make(kind, i, args.input, args.hidden, args.layers) for i in impls}
        x = torch.randn(args.seq, args.batch, args.input)
        for m in models.values():
            step(m, x)                                                     # warm-up
        speeds = {i: [] for i in impls}
        for _ in range(args.repeats):
            for i in impls:                                                # alternate: same CPU conditions
                speeds[i].append(measure(models[i], x, args.iters, args.warmup))
        med = {i: statistics.median(v) for i, v in speeds.items()}
        for i in impls:
            ratio = med[i] / med["torch"]
            results[f"{kind}_{i}_tokens_per_s"] = round(med[i])
            line = f"{kind:6s} {i:9s} {med[i]:10.0f} tokens/s  ({ratio:.2f}x torch.nn"
            if i != "torch":
                paired = [a / b for a, b in zip(speeds[i], speeds["torch"])]
                best = max(speeds[i]) / max(speeds["torch"])
                results[f"{kind}_{i}_ratio"] = round(ratio, 3)
                results[f"{kind}_{i}_paired_ratio"] = round(statistics.median(paired), 3)
                results[f"{kind}_{i}_best_ratio"] = round(best, 3)
                line += (f"; per repeat median {statistics.median(paired):.2f}x, {min(paired):.2f}-{max(paired):.2f}; "
                         f"best/best {best:.2f}x")
            print(line + ")")
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seq", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input", type=int, default=256, help="input feature size")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--iters", type=int, default=5, help="passes per timed repeat")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes before each timed repeat")
    p.add_argument("--kinds", default="lstm,gru", help="comma list of lstm, gru, rnn, bilstm, bigru, birnn")
    p.add_argument("--impls", default="fused,autograd", help="scratch implementations to compare with torch")
    p.add_argument("--threads", default="0", help="torch threads, or a comma list run one after the other "
                                                  "(0: leave the default)")
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (a smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.seq, args.batch, args.input, args.repeats, args.iters = 64, 20, 8, 64, 3, 2
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        res = run(args, threads or torch.get_num_threads())
        results.update({f"t{torch.get_num_threads()}_{k}": v for k, v in res.items()})
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
