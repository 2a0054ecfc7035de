"""Tokens per second generating N tokens with and without the KV cache (target: >= 5x at 256 tokens, 1 and 2
threads). Paths, alternated within each repeat (the CPU may be shared), median of the repeats:

    cached    the default: preallocated cache, static-shape one-token steps, thread count chosen by timing
              the first steps (learnloop.utils.threads.FastestThreads)
    dynamic   the readable cached path: attends over slots 0..t with per-step shapes, same thread choice
    fixed     the default path with every step on `--threads` (no thread choice)
    uncached  reruns the whole window for every token (the reference)

    .venv/bin/python bench/bench_kv_cache.py --threads 1
    .venv/bin/python bench/bench_kv_cache.py --threads 2
    .venv/bin/python bench/bench_kv_cache.py --quick    # 64 tokens, 1 repeat
All paths decode greedily from the same prompt and must produce the same tokens (checked).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from learnloop.models.gpt import GPT


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="64 tokens, 1 repeat")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.tokens, args.repeats = 64, 1
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    model = GPT(args.vocab, context=args.prompt + args.tokens, d_model=args.d_model, n_heads=args.heads,
                n_layers=args.layers, dropout=0.0).eval()
    prompt = torch.randint(0, args.vocab, (1, args.prompt))
    model.generate(prompt, 4)                                       # warm-up
    paths = {"cached": {}, "dynamic": {"static_cache": False}, "fixed": {"threads": threads},
             "uncached": {"use_cache": False}}
    speed, outs = {name: [] for name in paths}, {}
    for _ in range(args.repeats):
        for name, kw in paths.items():
            t0 = time.perf_counter()
            outs[name] = model.generate(prompt, args.tokens, greedy=True, **kw)
            speed[name].append(args.tokens / (time.perf_counter() - t0))
    for name in paths:
        assert torch.equal(outs[name], outs["uncached"]), f"{name} decoding disagrees with the uncached path"
    median = {name: statistics.median(v) for name, v in speed.items()}
    result = {"tokens": args.tokens, "threads": threads, "repeats": args.repeats}
    result.update({f"{name}_tokens_per_s": round(v, 1) for name, v in median.items()})
    result.update({f"speedup_{name}": round(median[name] / median["uncached"], 2) for name in ("cached", "dynamic", "fixed")})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
