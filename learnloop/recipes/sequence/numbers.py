"""Recurrent networks on generated number sequences: RNN vs LSTM vs GRU (learnloop.nn.recurrent).

- next-number: predict the next value of noisy arithmetic/periodic sequences, and recall one number after
  a lag of 5, 20 or 60 steps (one "<cell>_<task>" stage per cell and task).
- vanishing-through-time (a study): ||dL/dh_t|| for t = 1..T on the recall task, untrained and trained
  (one stage per cell). dL/dh_t = dL/dh_T prod_{k=t+1..T} dh_k/dh_{k-1}: a product of T - t Jacobians,
  which for a tanh RNN shrinks geometrically (Bengio, Simard & Frasconi, 1994; Pascanu et al., 2013),
  while the LSTM's additive cell state and the GRU's update gate can carry it (Hochreiter & Schmidhuber,
  1997; Cho et al., 2014).

Both share the recall sequences and the regression stage. They validate on their test/probe set and
monitor nothing: the last epoch's weights are evaluated. The data is generated from the run's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from learnloop.data.loader import TensorLoader
from learnloop.engine.learner import Learner
from learnloop.errors import UserError
from learnloop.models.sequence import CELLS, SequenceRegressor
from learnloop.nn.recurrent import gru_cell, lstm_cell, rnn_cell
from learnloop.recipes.base import Bundle, Parts, Predictor, Stage, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.sequence.common import MAX_PREDICT_INPUTS, distinct, shown, train_section
from learnloop.tasks.sequence import SequenceRegression
from learnloop.utils.io import write_json
from learnloop.utils.plots import plot_bars, plot_lines

NUMBERS_EVAL_BATCH = 1024


def number_sequences(n: int, length: int, noise: float, generator: torch.Generator):
    """Half noisy arithmetic progressions a + k d, half noisy sines A sin(2 pi k / p + phi); the target is
    the next noiseless value. Returns x (n, length, 1), y (n, 1)."""
    k = torch.arange(length + 1, dtype=torch.float32)
    half = n // 2
    a = torch.rand(half, 1, generator=generator) * 2 - 1
    d = (torch.rand(half, 1, generator=generator) * 2 - 1) * 0.1
    arith = a + d * k
    amp = 0.5 + torch.rand(n - half, 1, generator=generator)
    period = torch.randint(4, 13, (n - half, 1), generator=generator).float()
    phase = torch.rand(n - half, 1, generator=generator) * 2 * math.pi
    sine = amp * torch.sin(2 * math.pi * k / period + phase)
    seqs = torch.cat([arith, sine])
    x = seqs[:, :-1] + noise * torch.randn(n, length, generator=generator)
    return x.unsqueeze(2), seqs[:, -1:]


def recall_sequences(n: int, lag: int, generator: torch.Generator, ragged: bool = False):
    """Long dependency: x_0 is a value v in [-1, 1] (flagged by a second feature), then `lag` steps of noise;
    the target is v. Returns x (n, lag + 1, 2), lengths (n,), y (n, 1). With `ragged`, each sequence is cut
    to a random length in [1, lag + 1]: short sequences let a network discover what to store, long ones
    whether it can keep it (the test set always uses the full lag)."""
    v = torch.rand(n, 1, generator=generator) * 2 - 1
    x = torch.randn(n, lag + 1, generator=generator) * 0.5
    x[:, 0] = v[:, 0]
    flag = torch.zeros(n, lag + 1)
    flag[:, 0] = 1.0                                    # marks the value to remember
    lengths = torch.randint(1, lag + 2, (n,), generator=generator) if ragged else torch.full((n,), lag + 1)
    return torch.stack([x, flag], dim=2), lengths, v


def seeded_regressor(seed: int, inputs: int, hidden: int, num_layers: int, cell: str) -> SequenceRegressor:
    """The network every recipe here trains, initialised from `seed` (the same start for every cell)."""
    torch.manual_seed(seed)
    return SequenceRegressor(inputs, hidden, num_layers, cell)


def regression_stage(name: str, model: Callable[[], SequenceRegressor], train: TrainConfig,
                     tensors: Callable[[Bundle], tuple], seed: int) -> Stage:
    """Train `model()` with MSE on the (train, test) tensor tuples `tensors(bundle)`, validated on the test
    ones; nothing is monitored, so the last epoch's weights are kept."""
    def loaders(b: Bundle):
        tr, te = tensors(b)
        return TensorLoader(tr, train.batch_size, shuffle=True, seed=seed), TensorLoader(te, NUMBERS_EVAL_BATCH)

    return Stage(name, lambda trained: SequenceRegression(model(), train.optim), train, loaders=loaders, monitor=None)


def mse_on(task: SequenceRegression, tensors: tuple, prefix: str) -> float:
    return Learner(task).validate(TensorLoader(tensors, NUMBERS_EVAL_BATCH), prefix)[f"{prefix}_loss"]


# --- next-number -------------------------------------------------------------------------------------------
@dataclass
class NumberDataConfig:
    length: int = param(20, "observed steps of the arithmetic/periodic sequences", min=3)
    noise: float = param(0.05, "observation noise", min=0.0)
    lags: tuple[int, ...] = param((5, 20, 60), "dependency lengths for the recall task (trained on random "
                                  "lengths up to the lag, tested at the full lag)", min=1)
    train_size: int = param(4000, "training sequences per task", min=10)
    test_size: int = param(1000, "test sequences per task", min=10)


@dataclass
class NextNumberConfig:
    cells: tuple[str, ...] = param(("rnn", "lstm", "gru"), "cells to compare", choices=CELLS)
    hidden: int = param(32, "hidden units", min=1)
    num_layers: int = param(1, "recurrent layers", min=1, max=4)
    data: NumberDataConfig = section(NumberDataConfig, "the generated sequences")
    train: TrainConfig = train_section("training of every (cell, task) model (the last epoch's weights are "
                                       "evaluated)", epochs=12, batch_size=64, lr=3e-3)
    predict_cell: str = param("", "cell whose next-value model `learnloop predict` uses (empty: the last of "
                              "cells)", choices=("",) + CELLS)


def _number_tasks(cfg: NextNumberConfig) -> list[str]:
    return ["next"] + [f"recall{lag}" for lag in cfg.data.lags]


def _predict_cell(cfg: NextNumberConfig) -> str:
    cell = cfg.predict_cell or cfg.cells[-1]
    if cell not in cfg.cells:
        raise UserError(f"predict_cell: '{cell}' is not among cells ({', '.join(cfg.cells)})")
    return cell


class NumberPredictor(Predictor):
    inputs = ("comma-separated number sequences on the training scale (about -1.5..1.5), e.g. 0.1,0.2,0.3,0.4; "
              "the model saw data.length values")

    def __init__(self, task: SequenceRegression, cell: str):
        self.task, self.cell = task, cell

    def examples(self, folder) -> list[str]:
        sine = ",".join(f"{math.sin(2 * math.pi * k / 8):.3f}" for k in range(20))
        return [",".join(f"{0.1 * k - 0.5:.2f}" for k in range(20)), sine]

    @staticmethod
    def _parse(text) -> list[float]:
        if not isinstance(text, str) or not text.strip():
            raise UserError("empty input: give comma-separated numbers, e.g. 0.1,0.2,0.3")
        parts = text.split(",")
        if len(parts) > MAX_PREDICT_INPUTS:
            raise UserError(f"{len(parts)} values; at most {MAX_PREDICT_INPUTS} are accepted")
        values = []
        for p in parts:
            try:
                v = float(p)
            except ValueError:
                raise UserError(f"{shown(p.strip())} is not a number (in {shown(text)})") from None
            if not math.isfinite(v):
                raise UserError(f"{shown(p.strip())} is not a finite number (in {shown(text)})")
            values.append(v)
        return values

    @torch.no_grad()
    def __call__(self, raw: list[str]) -> list[dict]:
        sequences = [self._parse(t) for t in raw]
        model = self.task.model
        model.eval()
        out = []
        for text, values in zip(raw, sequences):
            x = torch.tensor(values, dtype=torch.float32).view(1, -1, 1)
            out.append({"input": text, "next": round(float(model(x)[0, 0]), 6), "cell": self.cell})
        return out


@recipe("next-number", "predict the next value of noisy arithmetic/periodic sequences; RNN vs LSTM vs GRU, "
        "and where the plain RNN fails on long dependencies", NextNumberConfig,
        target="LSTM/GRU recall MSE at the longest lag < 0.5 x the plain RNN's", main_metric="gru_next_mse",
        smoke={"cells": "gru", "hidden": 8, "data.lags": "3", "data.train_size": 64, "data.test_size": 32,
               "data.length": 8, "train.epochs": 1})
class NextNumber(Parts):
    def data(self, cfg: NextNumberConfig, seed: int) -> Bundle:
        distinct("cells", list(cfg.cells))
        distinct("data.lags", list(cfg.data.lags))
        _predict_cell(cfg)
        d = cfg.data
        g = torch.Generator().manual_seed(seed)
        sets = {"next": (number_sequences(d.train_size, d.length, d.noise, g),
                         number_sequences(d.test_size, d.length, d.noise, g))}
        for lag in d.lags:
            sets[f"recall{lag}"] = (recall_sequences(d.train_size, lag, g, ragged=True),
                                    recall_sequences(d.test_size, lag, g))
        info = {"inputs": {name: int(train[0].shape[2]) for name, (train, _) in sets.items()}, "seed": seed}
        return Bundle(info=info, extra=sets)

    def stages(self, cfg: NextNumberConfig, info: dict, upstream: dict) -> list[Stage]:
        seed = info["seed"]

        def stage(cell: str, name: str) -> Stage:
            size = info["inputs"][name]
            return regression_stage(f"{cell}_{name}", lambda: seeded_regressor(seed, size, cfg.hidden, cfg.num_layers,
                                                                               cell),
                                    cfg.train, lambda b: b.extra[name], seed)

        return [stage(cell, name) for cell in cfg.cells for name in _number_tasks(cfg)]

    def evaluate(self, cfg: NextNumberConfig, run, data: Bundle) -> dict:
        x_next, y_next = data.extra["next"][1]
        metrics = {"last_value_baseline_next_mse": float(((y_next - x_next[:, -1]) ** 2).mean())}  # repeat the last
        curves = {}
        for cell in cfg.cells:
            for name in _number_tasks(cfg):
                mse = mse_on(run.tasks[f"{cell}_{name}"], data.extra[name][1], "test")
                metrics[f"{cell}_{name}_mse"] = mse
                run.say(f"{cell:4s} {name:9s} test MSE {mse:.4f}")
            curves[cell] = (list(cfg.data.lags), [metrics[f"{cell}_recall{lag}_mse"] for lag in cfg.data.lags])
        plot_lines(curves, run.plots / "recall_mse_by_lag.png", "lag (steps between the value and the answer)",
                   "test MSE (variance of the target: 0.33)", "remembering one number", logy=True)
        plot_bars({c: metrics[f"{c}_next_mse"] for c in cfg.cells}, run.plots / "next_value_mse.png",
                  "test MSE", "next value of arithmetic/periodic sequences")
        return metrics

    def predictor(self, run) -> Predictor:
        cell = _predict_cell(run.cfg)
        return NumberPredictor(run.tasks[f"{cell}_next"], cell)


# --- vanishing-through-time --------------------------------------------------------------------------------
@dataclass
class VanishingDataConfig:
    steps: int = param(50, "sequence length T (the recall task's lag is T - 1)", min=2)
    train_size: int = param(3000, "training sequences of the recall task", min=10)
    probe_size: int = param(256, "sequences the gradient norms are averaged over", min=1)


@dataclass
class VanishingConfig:
    cells: tuple[str, ...] = param(("rnn", "lstm", "gru"), "cells to compare", choices=CELLS)
    hidden: int = param(32, "hidden units (one recurrent layer)", min=1)
    trained: bool = param(True, "also train each cell on the recall task (false: only the untrained networks)")
    data: VanishingDataConfig = section(VanishingDataConfig, "the recall sequences")
    train: TrainConfig = train_section("training on the recall task (the last epoch's weights are probed)",
                                       epochs=10, batch_size=64, lr=3e-3)

    MOVED = {"batch": "data.probe_size"}


def hidden_grad_norms(model: SequenceRegressor, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """||dL/dh_t|| for t = 1..T (mean over the batch), L = MSE of the model's read-out of h_T.

    The network's weights are stepped with the cell equations of `learnloop.nn.recurrent`, so every h_t is
    a node of the autograd graph whose gradient we keep (retain_grad)."""
    layer = model.encoder.layers[0]
    w = layer._weights(0, 0)
    cell = model.encoder.cell
    B, T, _ = x.shape
    h = x.new_zeros(B, layer.hidden_size)
    c = x.new_zeros(B, layer.hidden_size)
    hs = []
    for t in range(T):
        if cell == "lstm":
            h, c = lstm_cell(x[:, t], (h, c), w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        elif cell == "gru":
            h = gru_cell(x[:, t], h, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        else:
            h = rnn_cell(x[:, t], h, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        h.retain_grad()
        hs.append(h)
    loss = torch.nn.functional.mse_loss(model.head(h), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return [float(hh.grad.norm(dim=1).mean()) for hh in hs]


@recipe("vanishing-through-time", "gradient norm of the loss w.r.t. the hidden state at each time step: "
        "RNN vs LSTM vs GRU, untrained and after learning a long-lag recall task", VanishingConfig,
        target="after training, RNN's ||dL/dh_1|| / ||dL/dh_T|| far below LSTM's and GRU's",
        main_metric="rnn_trained_first_last_ratio",
        smoke={"data.steps": 8, "data.train_size": 64, "data.probe_size": 16, "hidden": 8, "train.epochs": 1})
class VanishingThroughTime(Parts):
    def data(self, cfg: VanishingConfig, seed: int) -> Bundle:
        distinct("cells", list(cfg.cells))
        g = torch.Generator().manual_seed(seed)
        train = recall_sequences(cfg.data.train_size, cfg.data.steps - 1, g, ragged=True)
        probe = recall_sequences(cfg.data.probe_size, cfg.data.steps - 1, g)     # the gradient-norm batch
        return Bundle(info={"seed": seed}, extra={"train": train, "probe": probe})

    def stages(self, cfg: VanishingConfig, info: dict, upstream: dict) -> list[Stage]:
        if not cfg.trained:
            return []
        seed = info["seed"]
        return [regression_stage(cell, lambda cell=cell: seeded_regressor(seed, 2, cfg.hidden, 1, cell), cfg.train,
                                 lambda b: (b.extra["train"], b.extra["probe"]), seed) for cell in cfg.cells]

    def evaluate(self, cfg: VanishingConfig, run, data: Bundle) -> dict:
        xp, lp, yp = data.extra["probe"]
        steps = list(range(1, cfg.data.steps + 1))
        curves, metrics = {}, {}
        for cell in cfg.cells:
            networks = [("init", seeded_regressor(run.info["seed"], 2, cfg.hidden, 1, cell))]
            if cfg.trained:
                task = run.tasks[cell]
                metrics[f"{cell}_recall_mse"] = mse_on(task, data.extra["probe"], "probe")
                networks.append(("trained", task.model))
            for when, model in networks:
                norms = hidden_grad_norms(model, xp, yp)
                curves[f"{cell.upper()} {when}"] = (steps, norms)
                metrics[f"{cell}_{when}_first_last_ratio"] = norms[0] / norms[-1]
                run.say(f"{cell:4s} {when:7s} ||dL/dh_1|| / ||dL/dh_T|| = {norms[0] / norms[-1]:.3e}")
        plot_lines(curves, run.plots / "grad_norm_through_time.png", "time step t", "mean ||dL/dh_t||",
                   f"gradients through {cfg.data.steps} steps (recall task, lag {cfg.data.steps - 1})", logy=True)
        write_json(run.path / "grad_norms.json", {k: v[1] for k, v in curves.items()})
        return metrics
