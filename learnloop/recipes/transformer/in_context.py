"""in-context: a decoder-only Transformer reads prompts (x_1, f(x_1), ..., x_k, f(x_k), x_query) of random
linear functions f(x) = w^T x, w ~ N(0, I_d), and predicts f(x_query) in context (Garg et al., 2022, "What
Can Transformers Learn In-Context? A Case Study of Simple Function Classes"): the error by number of
in-context examples k, next to their baselines (least squares, k-nearest neighbours, averaging).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learnloop.engine.learner import Learner
from learnloop.errors import UserError
from learnloop.models.transformer import InContextRegressor
from learnloop.recipes.base import Bundle, Parts, Predictor, recipe
from learnloop.recipes.config import param, section
from learnloop.recipes.sections import TrainConfig
from learnloop.recipes.transformer.common import adamw_cosine, input_texts, stage_curves
from learnloop.tasks.in_context import InContextRegression, PromptLoader, linear_regression_prompts
from learnloop.utils.plots import plot_lines


@dataclass
class InContextModelConfig:
    d_model: int = param(128, "model width", min=8)
    nhead: int = param(4, "attention heads", min=1)
    layers: int = param(4, "decoder blocks", min=1, max=12)
    dropout: float = param(0.0, "dropout", min=0.0, max=0.9)


@dataclass
class InContextConfig:
    n_dims: int = param(5, "input dimension d of the linear functions f(x) = w^T x", min=1, max=32)
    n_points: int = param(16, "(x, f(x)) pairs per prompt", min=2, max=64)
    model: InContextModelConfig = section(InContextModelConfig, "model")
    train: TrainConfig = adamw_cosine("training", epochs=20, batch_size=64, lr=5e-4, weight_decay=0.0)
    batches_per_epoch: int = param(200, "freshly drawn prompt batches per epoch", min=1)
    val_prompts: int = param(2048, "validation prompts (fixed)", min=64)
    val_batch_size: int = param(256, "prompts per validation batch", min=1)
    few_shot: int = param(0, "k of the err_few_shot metric (0: 2 x n_dims, at most n_points - 1)", min=0)
    knn: int = param(3, "neighbours of the nearest-neighbour baseline", min=1)


VAL_SEED_OFFSET = 10_000          # validation prompts come from seed + this, apart from the training stream


def _few_shot(cfg: InContextConfig) -> int:
    return min(cfg.few_shot or 2 * cfg.n_dims, cfg.n_points - 1)


def baseline_errors(xs: torch.Tensor, ys: torch.Tensor, knn: int = 3) -> dict[str, list[float]]:
    """Normalised error at each k for least squares (minimum-norm), k-nearest-neighbour averaging and the
    mean of the seen outputs (Garg et al.'s baselines)."""
    B, n, d = xs.shape
    out = {"least squares": [], f"{knn}-NN": [], "averaging": []}
    for k in range(n):
        q, target = xs[:, k], ys[:, k]
        if k == 0:
            for errs in out.values():
                errs.append(float(target.square().mean() / d))
            continue
        X, Y = xs[:, :k], ys[:, :k]
        w = torch.linalg.pinv(X) @ Y[..., None]
        ls = (q[:, None] @ w).reshape(B)
        dist = (X - q[:, None]).norm(dim=-1)
        idx = dist.topk(min(knn, k), largest=False).indices
        nn_mean = Y.gather(1, idx).mean(1)
        avg = ((X * Y[..., None]).mean(1) * q).sum(-1)          # w_hat = mean(y_i x_i)
        for key, pred in (("least squares", ls), (f"{knn}-NN", nn_mean), ("averaging", avg)):
            out[key].append(float((pred - target).square().mean() / d))
    return out


def _numbers(text: str, n: int, where: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"{where}: expected {n} comma-separated numbers, got {text.strip()[:60]!r}") from None
    if len(values) != n:
        raise UserError(f"{where}: expected {n} comma-separated numbers, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{where}: numbers must be finite, got {text.strip()[:60]!r}")
    return values


def parse_prompt(text: str, n_dims: int, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """"x -> y; x -> y; ...; x_query" (x: n_dims comma-separated numbers) -> xs (k+1, d), ys (k+1,) with a 0
    placeholder for the query's unknown output."""
    items = text.split(";")
    if len(items) > n_points:
        raise UserError(f"{len(items) - 1} examples and a query; the model reads at most {n_points - 1} examples")
    xs, ys = [], []
    for i, item in enumerate(items[:-1]):
        if item.count("->") != 1:
            raise UserError(f"example {i + 1}: write it as 'x1,...,x{n_dims} -> y', got {item.strip()[:60]!r}")
        x, y = item.split("->")
        xs.append(_numbers(x, n_dims, f"example {i + 1}"))
        ys.append(_numbers(y, 1, f"example {i + 1} output")[0])
    if "->" in items[-1]:
        raise UserError("the last item is the query x (no '-> y'); end the prompt with '; x1,...,xd'")
    xs.append(_numbers(items[-1], n_dims, "query"))
    ys.append(0.0)
    return torch.tensor([xs], dtype=torch.float32), torch.tensor([ys], dtype=torch.float32)


class InContextPredictor(Predictor):
    inputs = ("prompts 'x -> y; x -> y; ...; x' of a linear function (x: n_dims comma-separated numbers; "
              "training drew x and the weights from N(0, 1)); the model predicts y at the last x")

    def __init__(self, run):
        self.run, self.cfg, self.model = run, run.cfg, run.task.model

    def examples(self, folder) -> list[str]:
        g = torch.Generator().manual_seed(self.run.seed)
        k = _few_shot(self.cfg)
        xs, ys = linear_regression_prompts(2, k + 1, self.cfg.n_dims, g)
        out = []
        for b in range(2):
            pairs = [f"{','.join(f'{v:.3f}' for v in xs[b, i].tolist())} -> {ys[b, i]:.3f}" for i in range(k)]
            out.append("; ".join(pairs + [",".join(f"{v:.3f}" for v in xs[b, k].tolist())]))
        return out

    @torch.no_grad()
    def __call__(self, raw: list[str]) -> list[dict]:
        prompts = input_texts(raw, "a prompt such as '1,0 -> 2; 0,1 -> 3; 1,1'")
        self.model.eval()
        out = []
        for text in prompts:
            xs, ys = parse_prompt(text, self.cfg.n_dims, self.cfg.n_points)
            k = xs.shape[1] - 1
            pred = float(self.model(xs, ys)[0, -1])
            result = {"input": text, "examples": k, "prediction": pred}
            if k:
                w = torch.linalg.pinv(xs[0, :k]) @ ys[0, :k, None]
                result["least_squares"] = float(xs[0, k] @ w[:, 0])
            out.append(result)
        return out


@recipe("in-context", "in-context learning of random linear functions: error vs number of (x, f(x)) examples "
        "in the prompt (Garg et al., 2022)", InContextConfig,
        target="err_1 < err_0 and err_few < err_1 (error falls from zero- to one- to few-shot)",
        main_metric="err_few_shot",
        smoke={"n_dims": 2, "n_points": 5, "model.d_model": 16, "model.layers": 1, "model.nhead": 2,
               "train.epochs": 1, "batches_per_epoch": 3, "train.batch_size": 8, "val_prompts": 64,
               "val_batch_size": 32})
class InContext(Parts):
    def data(self, cfg: InContextConfig, seed: int) -> Bundle:
        train = PromptLoader(cfg.batches_per_epoch, cfg.train.batch_size, cfg.n_points, cfg.n_dims, seed=seed)
        val = PromptLoader(max(cfg.val_prompts // cfg.val_batch_size, 1), cfg.val_batch_size, cfg.n_points,
                           cfg.n_dims, seed=seed + VAL_SEED_OFFSET, fixed=True)
        return Bundle(train, val, None, info={"n_dims": cfg.n_dims, "n_points": cfg.n_points})

    def build(self, cfg: InContextConfig, info: dict) -> InContextRegression:
        m = cfg.model
        model = InContextRegressor(cfg.n_dims, cfg.n_points, m.d_model, m.nhead, m.layers, m.dropout)
        return InContextRegression(model, cfg.train.optim)

    def evaluate(self, cfg: InContextConfig, run, data: Bundle) -> dict:
        stage_curves(run, "", "icl", "in-context regression")
        final = Learner(run.task).validate(data.val, "val")
        n = cfg.n_points
        errs = [final[f"val_err_{k}"] for k in range(n)]
        g = torch.Generator().manual_seed(run.seed + VAL_SEED_OFFSET)
        xs, ys = linear_regression_prompts(cfg.val_prompts, n, cfg.n_dims, g)
        curves = {"transformer": (list(range(n)), errs)}
        for name, e in baseline_errors(xs, ys, cfg.knn).items():
            curves[name] = (list(range(n)), e)
        plot_lines(curves, run.plots / "error_vs_shots.png", "in-context examples k (0 = zero-shot)",
                   "squared error / d", f"in-context linear regression, d = {cfg.n_dims}")
        few = _few_shot(cfg)
        run.say("error by shots: " + ", ".join(f"k={k}: {e:.3f}" for k, e in enumerate(errs)))
        return {"err_zero_shot": errs[0], "err_one_shot": errs[1], "err_few_shot": errs[few], "few_shot_k": few,
                "err_last": errs[-1], "least_squares_err_few_shot": curves["least squares"][1][few]}

    def predictor(self, run) -> Predictor:
        return InContextPredictor(run)

