"""Choosing torch's intra-op thread count for a loop of small, repeated steps.

A step of ~100 tiny ops (a cached decoding step of a small language model) spends its time dispatching and
synchronising, so a second thread can make it slower, while the same model's big steps (a prompt, a full
window) get faster. `FastestThreads` measures instead of guessing: the first steps of the loop run round
robin on each candidate count (`trials` steps each); the rest run on the count with the lowest median step
time. The caller's thread count is restored on exit. Results do not depend on the choice beyond
floating-point summation order.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None (automatic), got {threads!r}")


class FastestThreads:
    """`with FastestThreads() as run: ...; y = run(step)`. `threads=None` tries 1 and the current count;
    an int fixes the count (no trial). `chosen` is the count in use once the trial is over."""

    def __init__(self, threads: int | None = None, trials: int = 6):
        check_threads(threads)
        self.original = torch.get_num_threads()
        if threads is not None:
            self.candidates = (threads,)
        else:
            self.candidates = tuple(sorted({1, self.original}))
        self.trials = trials
        self.times: dict[int, list[float]] = {n: [] for n in self.candidates}
        self.chosen: int | None = self.candidates[0] if len(self.candidates) == 1 else None
        self._calls = 0

    def __enter__(self) -> "FastestThreads":
        if self.chosen is not None:
            torch.set_num_threads(self.chosen)
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.original)

    def __call__(self, step: Callable[[], T]) -> T:
        if self.chosen is not None:
            return step()
        n = self.candidates[self._calls % len(self.candidates)]
        self._calls += 1
        torch.set_num_threads(n)
        start = time.perf_counter()
        result = step()
        self.times[n].append(time.perf_counter() - start)
        if all(len(t) >= self.trials for t in self.times.values()):
            self.chosen = min(self.candidates, key=lambda c: statistics.median(self.times[c]))
            torch.set_num_threads(self.chosen)
        return result
