"""Contrastive image-text training as a `Task` (CLIP, Radford et al., 2021), and what its evaluation measures.

Training step on a batch (images x, caption ids, pad_mask, labels y): logits = model(x, ids, pad_mask), an
(N, N) matrix of scaled cosine similarities; loss = symmetric InfoNCE (learnloop.losses.contrastive).
Logged beside it: the share of images whose top text is their own caption (`i2t_accuracy`) and of texts
whose top image is their own (`t2i_accuracy`), and the inverse temperature exp(s) (`logit_scale`).
Validation adds zero-shot accuracy from the class prompts the task was given (`zero_shot_accuracy`), the
metric that selects the best checkpoint.

Evaluation functions (pure, on embeddings):
- `zero_shot_predictions`: argmax_c I_e . T_c over class embeddings (one prompt, or a prompt ensemble);
- `linear_probe`: multinomial logistic regression on frozen image features, features standardised with the
  training mean and std, minimising  mean_i CE(W f_i + b, y_i) + (l2 / 2) ||W||^2  with full-batch L-BFGS
  (the same objective as scikit-learn's LogisticRegression with C = 1 / (l2 n)), l2 chosen on validation
  data from a grid (the paper's linear-probe protocol, sec. 3.2, Appendix A.3);
- `recall_at_k`: retrieval recall@k with a relevance matrix: a query is a hit when some relevant candidate
  is among its k best, i.e. when fewer than k irrelevant candidates score strictly above its best relevant
  one (ties count in the query's favour).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from learnloop.engine.optim import OptimConfig, build_optimizer
from learnloop.engine.task import Task
from learnloop.losses.contrastive import info_nce
from learnloop.models.clip import CLIP, prompt_ensemble


def pair_accuracy(logits_per_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text, text->image): share of rows / columns of the (N, N) logits whose maximum is diagonal."""
    labels = torch.arange(len(logits_per_image), device=logits_per_image.device)
    return ((logits_per_image.argmax(1) == labels).float().mean(),
            (logits_per_image.argmax(0) == labels).float().mean())


@torch.no_grad()
def class_embeddings(model: CLIP, ids: torch.Tensor, pad_mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, E) class embeddings from C * K class-major prompts: the prompt ensemble over each class's K."""
    emb, _ = model.encode_text(ids, pad_mask)
    return prompt_ensemble(emb.reshape(num_classes, -1, emb.shape[-1]))


def zero_shot_predictions(image_embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """(N,) argmax over classes of the cosine similarity of unit image and class embeddings."""
    return (image_embeddings @ class_embeddings.T).argmax(1)


class Contrastive(Task):
    """Symmetric-InfoNCE training of a `CLIP` model; `prompts` = (ids, pad_mask) of C * K class-major class
    prompts for the validation zero-shot accuracy (None: not measured)."""

    def __init__(self, model: CLIP, optim: OptimConfig | None = None,
                 prompts: tuple[torch.Tensor, torch.Tensor] | None = None, num_classes: int = 0):
        self.model, self.optim = model, optim or OptimConfig()
        self.prompts, self.num_classes = prompts, num_classes
        self._classes: torch.Tensor | None = None

    def modules(self):
        return {"model": self.model}

    def configure_optimizers(self):
        return build_optimizer(self.optim, self.model.parameters())

    def _step(self, batch) -> dict:
        x, ids, pad = batch[0], batch[1], batch[2]
        logits = self.model(x, ids, pad)
        out = {"loss": info_nce(logits)}
        with torch.no_grad():
            out["i2t_accuracy"], out["t2i_accuracy"] = pair_accuracy(logits.detach())
            out["logit_scale"] = self.model.scale().detach()
        return out

    def training_step(self, batch, learner):
        return self._step(batch)

    def on_validation_start(self, learner, stage):
        if self.prompts is not None:
            ids, pad = (t.to(learner.device) for t in self.prompts)
            self._classes = class_embeddings(self.model, ids, pad, self.num_classes)

    def validation_step(self, batch, learner):
        out = self._step(batch)
        if self._classes is not None:
            pred = zero_shot_predictions(self.model.encode_image(batch[0]), self._classes)
            out["zero_shot_accuracy"] = (pred == batch[3]).float().mean()
        return {k: v.detach() for k, v in out.items()}


# --- evaluation ------------------------------------------------------------------------------------------
def recall_at_k(similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """{k: share of queries (rows of the (Q, C) similarity) with a relevant candidate among their k best}
    (module docstring; ties in the query's favour). Every query needs at least one relevant candidate."""
    if similarity.shape != relevant.shape or similarity.dim() != 2:
        raise ValueError(f"similarity {tuple(similarity.shape)} and relevant {tuple(relevant.shape)} must be "
                         "the same (queries, candidates) shape")
    if not bool(relevant.any(1).all()):
        raise ValueError("every query needs at least one relevant candidate")
    best = similarity.masked_fill(~relevant, float("-inf")).amax(1, keepdim=True)
    above = ((similarity > best) & ~relevant).sum(1)
    return {k: float((above < k).float().mean()) for k in ks}


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 200,
                            tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(W (num_classes, D), b (num_classes,)) minimising mean CE(x W^T + b, y) + (l2 / 2) ||W||^2 by
    full-batch L-BFGS (float64; deterministic)."""
    x64 = x.double()
    W = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x64 @ W.T + b, y) + 0.5 * l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return W.detach(), b.detach()


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], num_classes: int, l2_grid: Sequence[float],
                 max_iter: int = 200) -> dict:
    """Logistic regression on frozen features: l2 picked by validation accuracy, then test accuracy.
    Each argument is (features (N, D), labels (N,))."""
    xs = _standardise(train[0].double(), val[0].double(), test[0].double())
    best = None
    for l2 in l2_grid:
        W, b = fit_logistic_regression(xs[0], train[1], num_classes, l2, max_iter)
        acc = float(((xs[1] @ W.T + b).argmax(1) == val[1]).double().mean())
        if best is None or acc > best[0]:
            best = (acc, l2, W, b)
    acc, l2, W, b = best
    pred = (xs[2] @ W.T + b).argmax(1)
    return {"val_accuracy": acc, "l2": l2, "test_accuracy": float((pred == test[1]).double().mean()),
            "predictions": pred}
