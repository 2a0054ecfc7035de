"""Train the six GANs for the same CPU-time budget and print one table with the real-data floor and the
noise ceiling (learnloop.evaluation.generative), for both the best (per-epoch FID) and the last checkpoint.

    .venv/bin/python bench/bench_gans.py                    # 5 CPU minutes of training per GAN, 2 at a time
    .venv/bin/python bench/bench_gans.py --budget-min 15    # the issue's example budget (about 55 min wall)
    .venv/bin/python bench/bench_gans.py --quick            # 0.3 min each, 1k evaluation samples (smoke test)

Each GAN is `learnloop run NAME --set train.time_budget_min=B --set train.epochs=1000` in its own process (torch threads
set by --threads; 1 thread per process is much faster than 2 when the CPU is shared). The budget is the
process CPU time of training (all threads; per-epoch sample grid and FID included, final evaluation
excluded), checked at the end of each epoch (200 batches), so other jobs on the machine do not shrink it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GANS = ("gan-mlp", "dcgan", "wgan-clip", "wgan-gp", "sngan", "cgan")
COLUMNS = (("FID", "fid", 1.0), ("KIDx1e3", "kid_mean", 1e3), ("precision", "precision", 1.0),
           ("recall", "recall", 1.0), ("density", "density", 1.0), ("coverage", "coverage", 1.0))


def run_one(name: str, args) -> dict:
    sets = [f"train.time_budget_min={args.budget_min}", f"train.epochs={args.max_epochs}",
            f"eval.samples={args.eval_samples}",
            f"monitor_samples={args.monitor_samples}"]
    cmd = [str(ROOT / ".venv" / "bin" / "learnloop"), "run", name, "--out", str(args.out), "--seed", str(args.seed)]
    for s in sets + list(args.set or []):
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    t0 = time.time()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.time() - t0
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return {"name": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed",
                "command": " ".join(cmd)}
    folder = Path(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((folder / "metrics.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    train_time = 60 * max((r.get("cpu_min", 0.0) for r in rows), default=0.0)
    print(f"{name}: done in {wall / 60:.1f} min ({folder})", file=sys.stderr, flush=True)
    return {"name": name, "folder": str(folder), "metrics": metrics, "wall_s": wall, "train_s": train_time,
            "command": " ".join(cmd)}


def _row(label: str, m: dict, prefix: str, extra: list[str]) -> str:
    cells = [f"{m[prefix + key] * scale:.3g}" if isinstance(m.get(prefix + key), (int, float)) else "-"
             for _, key, scale in COLUMNS]
    return "| " + " | ".join([label, *cells, *extra]) + " |"


def table(results: list[dict]) -> str:
    head = ["model", *[c for c, _, _ in COLUMNS], "min class frac", "classes", "epoch", "train CPU min", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    floor = ceiling = None
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error']} |")
            continue
        m = r["metrics"]
        floor = floor or m
        ceiling = ceiling or m
        for which in ("best", "last"):
            hist = [m.get(f"{which}_class_hist_{i}") for i in range(10)]
            hist = [h for h in hist if h is not None]
            note = ""
            if which == "last" and m.get("stop_reason"):
                note = m["stop_reason"][:60]
            if which == "best" and "best_class_accuracy" in m:
                note = f"class acc {m['best_class_accuracy']:.3f}"
            if which == "last" and "last_class_accuracy" in m:
                note = f"class acc {m['last_class_accuracy']:.3f}" + (f"; {note}" if note else "")
            lines.append(_row(f"{r['name']} ({which})", m, f"{which}_", [
                f"{min(hist):.3f}" if hist else "-", f"{sum(h > 0 for h in hist)}" if hist else "-",
                str(m.get(f"{which}_epoch", "-")), f"{r['train_s'] / 60:.1f}", note]))
    if floor is not None:
        lines.append(_row("floor (real train images)", floor, "floor_", ["", "", "", "", ""]))
        lines.append(_row("ceiling (uniform noise)", ceiling, "ceiling_", ["", "", "", "", ""]))
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-min", type=float, default=5.0, help="training minutes per GAN")
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--eval-samples", type=int, default=10000)
    p.add_argument("--monitor-samples", type=int, default=2000)
    p.add_argument("--gans", nargs="+", default=list(GANS), choices=GANS)
    p.add_argument("--jobs", type=int, default=2, help="GANs trained at the same time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per GAN process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", help="extra --set for every GAN")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-gans")
    p.add_argument("--quick", action="store_true", help="0.3 min each, 1,000 evaluation samples")
    args = p.parse_args(argv)
    if args.quick:
        args.budget_min, args.eval_samples, args.monitor_samples = 0.3, 1000, 500
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda n: run_one(n, args), args.gans))
    text = (f"GANs on Fashion-MNIST, {args.budget_min:g} CPU minutes of training each ({args.jobs} at a time, "
            f"{args.threads} torch thread(s) each), {args.eval_samples} samples, k=5, evaluator features, "
            f"reference: test split\n\n" + table(results))
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
