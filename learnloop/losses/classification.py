"""Cross-entropy for classifiers.

Multi-class (logits z in R^C):  L = -log softmax(z)_y, optionally with label smoothing eps
(target = (1 - eps) one_hot(y) + eps / C; Szegedy et al., 2016).
Binary (one logit z, logistic regression):  L = -[y log sigma(z) + (1 - y) log(1 - sigma(z))].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), target.to(logits.dtype))
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
