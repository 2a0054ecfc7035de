"""FID speed: learnloop's eigh formulation vs the scipy.linalg.sqrtm path (pytorch-fid's formula).

Both start from the same (N, D) float32 feature matrices and compute, in float64, the means, covariances and
    FID = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2});
"sqrtm" is numpy.cov + scipy.linalg.sqrtm(S_1 @ S_2) (a Schur decomposition of a non-symmetric matrix),
"eigh" is learnloop.metrics.generative.fid (two symmetric eigendecompositions). Also timed from precomputed
statistics (the trace term alone). Runs alternate between the two paths (the CPU may be shared); the
reported ratio is median(sqrtm) / median(eigh), for wall-clock and for process CPU time.

    .venv/bin/python bench/bench_fid.py            # 10,000 x 2048 features, 3 repeats
    .venv/bin/python bench/bench_fid.py --quick    # 2,000 x 512, 2 repeats
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import scipy.linalg
import torch

from learnloop.metrics.generative import feature_stats, fid, fid_from_stats


def features(n: int, d: int, seed: int, shift: float) -> np.ndarray:
    """Correlated, non-negative features like pooled ReLU activations."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
    return np.maximum(rng.normal(size=(n, d)).astype(np.float32) @ mix + shift, 0)


def sqrtm_stats(x: np.ndarray):
    x = x.astype(np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


def sqrtm_fid_from_stats(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - w, time.process_time() - c


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.dim, args.repeats = 2000, 512, 2
    x, y = features(args.n, args.dim, 0, 0.0), features(args.n, args.dim, 1, 0.1)
    s_np = (*sqrtm_stats(x), *sqrtm_stats(y))
    s_t = (*feature_stats(x), *feature_stats(y))
    paths = {
        "sqrtm_features": lambda: sqrtm_fid_from_stats(*sqrtm_stats(x), *sqrtm_stats(y)),
        "eigh_features": lambda: fid(torch.from_numpy(x), torch.from_numpy(y)),
        "sqrtm_stats": lambda: sqrtm_fid_from_stats(*s_np),
        "eigh_stats": lambda: fid_from_stats(*s_t),
    }
    wall = {k: [] for k in paths}
    cpu = {k: [] for k in paths}
    values = {}
    for r in range(args.repeats):
        for name, fn in paths.items():
            values[name], w, c = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
            print(f"repeat {r + 1} {name:15s} FID {values[name]:.6f}  wall {w:7.2f}s  cpu {c:7.2f}s",
                  flush=True)
    med = {k: statistics.median(v) for k, v in wall.items()}
    medc = {k: statistics.median(v) for k, v in cpu.items()}
    out = {
        "n": args.n, "dim": args.dim, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "fid_sqrtm": values["sqrtm_features"], "fid_eigh": values["eigh_features"],
        "rel_diff": abs(values["eigh_features"] - values["sqrtm_features"]) / abs(values["sqrtm_features"]),
        "median_wall_s": {k: round(v, 3) for k, v in med.items()},
        "median_cpu_s": {k: round(v, 3) for k, v in medc.items()},
        "speedup_features_wall": med["sqrtm_features"] / med["eigh_features"],
        "speedup_features_cpu": medc["sqrtm_features"] / medc["eigh_features"],
        "speedup_stats_wall": med["sqrtm_stats"] / med["eigh_stats"],
        "speedup_stats_cpu": medc["sqrtm_stats"] / medc["eigh_stats"],
    }
    print(json.dumps(out, indent=2))
    print(f"FID from {args.n} x {args.dim} features: eigh is {out['speedup_features_wall']:.1f}x faster than "
          f"sqrtm (wall; {out['speedup_features_cpu']:.1f}x in CPU time); from statistics "
          f"{out['speedup_stats_wall']:.1f}x")


if __name__ == "__main__":
    main()
