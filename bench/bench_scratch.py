"""Benchmarks of learnloop.scratch against its references.

    cnn     scratch CNN (im2col conv, BatchNorm, max-pool, Adam) on Fashion-MNIST: test accuracy and time
    linalg  LU / Householder QR / Cholesky / solvers: time ratio ours / SciPy at a few sizes
    trees   OneR, CART, bagging, random forest vs scikit-learn with the same settings on breast cancer
            (5-fold CV) and Adult (official train/test split): accuracy and fit-time ratio

Usage:  .venv/bin/python bench/bench_scratch.py [--quick] [--only cnn linalg trees]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

# one BLAS thread for ours and the references alike: stable ratios on a shared 2-core machine (override by env)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np


def _timed(fn, repeat: int = 1) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_cnn(quick: bool) -> None:
    from learnloop.data import load_fashion_mnist
    from learnloop.scratch import layers as L
    from learnloop.scratch.optim import Adam
    from learnloop.scratch.train import accuracy, train_epoch

    n_train, epochs = (2000, 1) if quick else (10000, 4)
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    x = train.images[:n_train].numpy().astype(np.float32) / 255.0
    y = train.labels[:n_train].numpy()
    xt, yt = test.images.numpy().astype(np.float32) / 255.0, test.labels.numpy()
    rng = np.random.default_rng(0)
    model = L.Sequential(L.Conv2d(1, 16, 3, padding=1, rng=rng), L.BatchNorm(16), L.ReLU(), L.MaxPool2d(2),
                         L.Conv2d(16, 32, 3, padding=1, rng=rng), L.BatchNorm(32), L.ReLU(), L.MaxPool2d(2),
                         L.Flatten(), L.Linear(32 * 7 * 7, 10, rng=rng))
    opt = Adam(model.parameters(), lr=2e-3)
    print(f"\n## scratch CNN, Fashion-MNIST: {n_train} train images, {len(yt)} test images, batch 64, Adam 2e-3")
    total = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(model, opt, x, y, batch_size=64, rng=rng)
        total += time.perf_counter() - start
        acc = accuracy(model, xt, yt)
        print(f"epoch {epoch}: train loss {loss:.4f}  test accuracy {acc:.4f}  training time so far {total:.1f}s")
    print(f"RESULT cnn test_accuracy={acc:.4f} train_seconds={total:.1f} (target >= 0.85)")


def bench_linalg(quick: bool) -> None:
    import scipy.linalg as sla

    from learnloop.scratch import linalg_cholesky as C
    from learnloop.scratch import linalg_lu as LU
    from learnloop.scratch import linalg_qr as Q

    sizes = (100, 300) if quick else (100, 300, 1000)
    threads = os.environ["OPENBLAS_NUM_THREADS"]
    print(f"\n## linear algebra: blocked LU / QR / Cholesky, best of 3 with ours and SciPy (LAPACK) alternating, "
          f"BLAS threads {threads}")
    print(f"{'n':>5} {'op':<18} {'ours ms':>10} {'scipy ms':>10} {'ratio':>8}")
    at_largest = {}
    for n in sizes:
        rng = np.random.default_rng(n)
        a, b = rng.normal(size=(n, n)), rng.normal(size=(n, 5))
        spd = a @ a.T + n * np.eye(n)
        tall = rng.normal(size=(2 * n, n))
        rhs = rng.normal(size=(2 * n, 5))
        p = functools.partial
        cases = [
            ("lu_factor", p(LU.lu_factor, a), p(sla.lu_factor, a)),
            ("solve (LU)", p(LU.solve, a, b), p(sla.solve, a, b)),
            ("inv (LU)", p(LU.inv, a), p(sla.inv, a)),
            ("qr", p(Q.qr, a), p(sla.qr, a)),
            ("lstsq (QR)", p(Q.lstsq, tall, rhs), p(sla.lstsq, tall, rhs)),
            ("cholesky", p(C.cholesky, spd), p(sla.cholesky, spd, lower=True)),
            ("solve_spd (Chol)", p(C.solve_spd, spd, b), lambda spd=spd, b=b: sla.cho_solve(sla.cho_factor(spd), b)),
            ("mvn sample 1k", p(C.multivariate_normal, np.zeros(n), spd, 1000, rng=rng),
             p(rng.multivariate_normal, np.zeros(n), spd, 1000, method="cholesky")),
        ]
        for name, ours, ref in cases:
            ours(), ref()  # warm up both
            t_ours, t_ref = np.inf, np.inf
            for _ in range(3):  # alternate the two sides: load changes on a shared machine hit both alike
                t_ours, t_ref = min(t_ours, _timed(ours)), min(t_ref, _timed(ref))
            print(f"{n:>5} {name:<18} {1e3 * t_ours:>10.2f} {1e3 * t_ref:>10.2f} {t_ours / t_ref:>8.2f}")
            at_largest[name] = t_ours / t_ref
    print(f"RESULT linalg n={sizes[-1]} threads={threads} " + " ".join(f"{k.split()[0]}={v:.2f}" for k, v in at_largest.items())
          + " (target <= 3 at n=1000)")


def _compare(name, ours_factory, ref_factory, splits, repeat: int = 1) -> tuple[float, float]:
    """Fit ours and the reference alternately on every split, `repeat` times; the best total fit time of each side
    (both fits are deterministic, so the accuracies are those of any round). Returns (accuracy diff pt, ratio)."""
    times = [[], []]
    for _ in range(repeat):
        accs, t_ours, t_ref = [[], []], 0.0, 0.0
        for xtr, ytr, xte, yte in splits:
            start = time.perf_counter()
            ours = ours_factory().fit(xtr, ytr)
            t_ours += time.perf_counter() - start
            start = time.perf_counter()
            ref = ref_factory().fit(xtr, ytr)
            t_ref += time.perf_counter() - start
            accs[0].append((ours.predict(xte) == yte).mean())
            accs[1].append((ref.predict(xte) == yte).mean())
        times[0].append(t_ours)
        times[1].append(t_ref)
    a, r = np.mean(accs[0]), np.mean(accs[1])
    t_ours, t_ref = min(times[0]), min(times[1])
    print(f"{name:<34} {a:>8.4f} {r:>8.4f} {100 * (a - r):>+7.2f} {t_ours:>9.3f} {t_ref:>9.3f} {t_ours / t_ref:>7.2f}",
          flush=True)
    return 100 * (a - r), t_ours / t_ref


def bench_trees(quick: bool) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import BaggingClassifier, RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold
    from sklearn.tree import DecisionTreeClassifier

    from learnloop.data.tabular import load_adult, to_numeric
    from learnloop.scratch.cart import DecisionTree
    from learnloop.scratch.forest import Bagging, RandomForest
    from learnloop.scratch.oner import OneR

    x, y = load_breast_cancer(return_X_y=True)
    cancer = [(x[tr], y[tr], x[te], y[te]) for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y)]
    adult = load_adult()
    xa, _ = to_numeric(adult.frame, adult.feature_names)
    train = adult.split == "train"
    adult_split = [(xa[train], adult.y[train], xa[~train], adult.y[~train])]
    n_forest, n_bagged = (10, 10) if quick else (50, 25)  # bagging searches all ~100 Adult features per node
    repeat = 1 if quick else 3
    header = f"{'model':<34} {'ours':>8} {'sklearn':>8} {'diff pt':>7} {'ours s':>9} {'sk s':>9} {'ratio':>7}"
    print(f"\n(trees: ours level-wise exact split search (split_search='auto'), sklearn n_jobs=None; both single"
          f"-threaded, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}; best of {repeat} alternating rounds)")
    for data_name, splits in (("breast cancer, 5-fold CV", cancer),
                              (f"Adult, {int(train.sum())} train / {int((~train).sum())} test", adult_split)):
        print(f"\n## trees on {data_name} (accuracy; total fit seconds)\n{header}")
        _compare("OneR vs majority class", OneR, lambda: DummyClassifier(), splits)
        results = {}
        for criterion in ("gini", "entropy"):
            for depth in (8, None):
                results[f"CART {criterion} max_depth={depth}"] = _compare(
                    f"CART {criterion} max_depth={depth}", lambda c=criterion, d=depth: DecisionTree(c, max_depth=d),
                    lambda c=criterion, d=depth: DecisionTreeClassifier(criterion=c, max_depth=d, random_state=0),
                    splits, repeat)
        results["Bagging"] = _compare(
            f"Bagging {n_bagged} trees", lambda: Bagging(n_estimators=n_bagged, random_state=0),
            lambda: BaggingClassifier(DecisionTreeClassifier(), n_estimators=n_bagged, random_state=0), splits, repeat)
        results["RandomForest"] = _compare(
            f"RandomForest {n_forest} sqrt", lambda: RandomForest(n_forest, random_state=0),
            lambda: RandomForestClassifier(n_forest, random_state=0), splits, repeat)
        results["RandomForest leaf=5"] = _compare(
            f"RandomForest {n_forest} sqrt leaf=5", lambda: RandomForest(n_forest, min_samples_leaf=5, random_state=0),
            lambda: RandomForestClassifier(n_forest, min_samples_leaf=5, random_state=0), splits, repeat)
        cart = [v for key, v in results.items() if key.startswith("CART")]
        forest = [results["RandomForest"], results["RandomForest leaf=5"]]
        print(f"RESULT trees {data_name.split(',')[0]}: CART ratio max {max(r for _, r in cart):.2f}, random forest "
              f"ratio max {max(r for _, r in forest):.2f}, largest |accuracy diff| "
              f"{max(abs(a) for a, _ in cart + forest):.2f} pt (target on Adult: ratio <= 2, within 1 pt)")
        if not quick:
            xtr, ytr = splits[0][0], splits[0][1]
            ours = RandomForest(n_forest, oob_score=True, random_state=0).fit(xtr, ytr)
            ref = RandomForestClassifier(n_forest, oob_score=True, random_state=0).fit(xtr, ytr)
            print(f"{'RandomForest OOB score (1st split)':<34} {ours.oob_score_:>8.4f} {ref.oob_score_:>8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a minute or two")
    parser.add_argument("--only", nargs="+", choices=["cnn", "linalg", "trees"], default=["cnn", "linalg", "trees"])
    args = parser.parse_args()
    start = time.perf_counter()
    for name in args.only:
        {"cnn": bench_cnn, "linalg": bench_linalg, "trees": bench_trees}[name](args.quick)
    print(f"\ntotal benchmark time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
