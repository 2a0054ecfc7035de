"""Small deterministic fixtures for engine tests (kept here, imported by the engine tests)."""

import torch

from learnloop.data import TensorLoader
from learnloop.engine.task import Task
from learnloop.tasks.classification import Classification


def blobs(n=256, d=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 3
    y = torch.arange(n) % classes
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


def mlp_task(d=8, classes=3, dropout=0.2, optimizer="adamw", lr=1e-2, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                                torch.nn.Linear(32, classes))
    return Classification(model, classes, optimizer=optimizer, lr=lr)


def loaders(batch_size=32, seed=0):
    x, y = blobs()
    return (TensorLoader((x[:192], y[:192]), batch_size, shuffle=True, seed=seed),
            TensorLoader((x[192:], y[192:]), 64))


class NaNAfter(Task):
    """Regression whose loss becomes NaN at training step `bad_step` (to test the guard)."""

    def __init__(self, bad_step):
        self.model, self.calls, self.bad_step = torch.nn.Linear(4, 1), 0, bad_step

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.1)

    def training_step(self, batch, learner):
        self.calls += 1
        loss = (self.model(batch[0]).squeeze(1) - batch[1]).pow(2).mean()
        return {"loss": loss * float("nan") if self.calls >= self.bad_step else loss}
