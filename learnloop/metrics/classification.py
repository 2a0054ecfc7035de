"""Classification metrics as pure functions of logits/predictions and integer labels.

Logits of shape (N, C) are multi-class; shape (N,) or (N, 1) are one binary logit (sigmoid) per sample.
- accuracy = mean(argmax_c p(c|x) == y)
- confusion matrix M[i, j] = #{true class i predicted as j}
- per-class precision_c = M[c, c] / sum_i M[i, c], recall_c = M[c, c] / sum_j M[c, j],
  F1_c = 2 P R / (P + R); macro-F1 is their unweighted mean.
"""

from __future__ import annotations

import torch


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) probabilities; a single binary logit becomes [1 - sigmoid, sigmoid]."""
    if logits.ndim == 1 or logits.shape[-1] == 1:
        p = torch.sigmoid(logits.reshape(-1))
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=-1)


def predictions(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return (logits.reshape(-1) > 0).long()
    return logits.argmax(dim=-1)


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (predictions(logits) == target).float().mean()


def top_k_accuracy(logits: torch.Tensor, target: torch.Tensor, k: int = 5) -> torch.Tensor:
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    return (top == target[:, None]).any(dim=1).float().mean()


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall_f1(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    m = confusion.double()
    tp = m.diag()
    precision = tp / m.sum(0).clamp_min(1)
    recall = tp / m.sum(1).clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "macro_f1": f1.mean()}


def per_sample_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits.reshape(-1), target.float(), reduction="none")
    return torch.nn.functional.cross_entropy(logits, target, reduction="none")
