"""Small deterministic fixtures for engine tests (kept here, imported by the engine tests)."""

import torch

from learnloop.data import TensorLoader
from learnloop.engine.optim import OptimConfig
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
    return Classification(model, classes, OptimConfig(name=optimizer, lr=lr))


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


class Regression(Task):
    """MSE regression of y on x with plain SGD (no momentum) over a small MLP with BatchNorm (so there are
    buffers), float64 when asked: for exact comparisons with hand-computed updates."""

    def __init__(self, d=4, lr=0.1, dtype=torch.float32, seed=0, batchnorm=True):
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(d, 8)] + ([torch.nn.BatchNorm1d(8)] if batchnorm else []) + \
            [torch.nn.Tanh(), torch.nn.Linear(8, 1)]
        self.model, self.lr = torch.nn.Sequential(*layers).to(dtype), lr

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=self.lr)

    def training_step(self, batch, learner):
        return {"loss": (self.model(batch[0]).squeeze(1) - batch[1]).pow(2).mean()}

    def validation_step(self, batch, learner):
        return {"loss": (self.model(batch[0]).squeeze(1) - batch[1]).pow(2).mean()}

    def predict_step(self, batch, learner):
        return self.model(batch[0])


class TwoPlayer(Task):
    """Manual optimisation with two modules and two optimizers ("a" then "b" every batch), GAN-shaped."""

    automatic_optimization = False

    def __init__(self, d=4, lr=0.05, seed=0):
        torch.manual_seed(seed)
        self.a, self.b, self.lr = torch.nn.Linear(d, 1), torch.nn.Linear(d, 1), lr

    def modules(self):
        return {"a": self.a, "b": self.b}

    def configure_optimizers(self):
        return {"a": torch.optim.SGD(self.a.parameters(), lr=self.lr),
                "b": torch.optim.SGD(self.b.parameters(), lr=self.lr)}

    def training_step(self, batch, learner):
        x, y = batch[0], batch[1]
        la = (self.a(x).squeeze(1) - y).pow(2).mean()
        learner.backward(la)
        learner.optimizer_step("a")
        lb = (self.b(x).squeeze(1) + y).pow(2).mean()
        learner.backward(lb)
        learner.optimizer_step("b")
        return {"a_loss": la.detach(), "b_loss": lb.detach()}


def regression_data(n=40, d=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)
