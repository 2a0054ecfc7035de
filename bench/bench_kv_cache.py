"""Tokens per second generating N tokens with and without the KV cache (target: >= 5x at 256 tokens).

    .venv/bin/python bench/bench_kv_cache.py            # 256 new tokens, GPT d=256, 4 layers, 3 repeats
    .venv/bin/python bench/bench_kv_cache.py --quick    # 64 tokens, 1 repeat
    .venv/bin/python bench/bench_kv_cache.py --threads 1   # on a CPU shared with other jobs
Both paths decode greedily from the same prompt and must produce the same tokens (checked).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from learnloop.models.gpt import GPT


def timed(model, prompt, n, use_cache, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model.generate(prompt, n, greedy=True, use_cache=use_cache)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="64 tokens, 1 repeat")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.tokens, args.repeats = 64, 1
    torch.manual_seed(0)
    model = GPT(args.vocab, context=args.prompt + args.tokens, d_model=args.d_model, n_heads=args.heads,
                n_layers=args.layers, dropout=0.0).eval()
    prompt = torch.randint(0, args.vocab, (1, args.prompt))
    model.generate(prompt, 4)                                       # warm-up
    t_cache, a = timed(model, prompt, args.tokens, True, args.repeats)
    t_full, b = timed(model, prompt, args.tokens, False, args.repeats)
    assert torch.equal(a, b), "cached and uncached decoding disagree"
    result = {"tokens": args.tokens, "threads": torch.get_num_threads(),
              "cached_tokens_per_s": round(args.tokens / t_cache, 1),
              "uncached_tokens_per_s": round(args.tokens / t_full, 1), "speedup": round(t_full / t_cache, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
