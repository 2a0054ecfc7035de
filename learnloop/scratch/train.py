"""Mini-batch training of a scratch classifier: shuffle, forward, cross-entropy, tape gradient, optimiser step.

One epoch visits every example once in a random order (Robbins & Monro, 1951 style stochastic gradient descent
on mini-batches); `accuracy` evaluates in eval mode in batches.
"""

from __future__ import annotations

import numpy as np

from learnloop.scratch.autodiff import Tape, Tensor
from learnloop.scratch.layers import Module, cross_entropy


def train_epoch(model: Module, optimizer, x: np.ndarray, y: np.ndarray, batch_size: int,
                rng: np.random.Generator) -> float:
    """One pass over (x, y); returns the mean training loss."""
    model.train()
    params = model.parameters()
    order = rng.permutation(len(x))
    total = 0.0
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        with Tape() as tape:
            loss = cross_entropy(model(Tensor(x[idx])), y[idx])
        optimizer.step(tape.gradient(loss, params))
        total += float(loss.value) * len(idx)
    return total / len(x)


def predict(model: Module, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    model.eval()
    return np.concatenate([model(Tensor(x[s:s + batch_size])).value.argmax(axis=1)
                           for s in range(0, len(x), batch_size)])


def accuracy(model: Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    return float((predict(model, x, batch_size) == y).mean())
