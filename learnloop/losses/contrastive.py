"""Symmetric InfoNCE, the contrastive loss of CLIP (Radford et al., 2021, fig. 3; van den Oord et al., 2018).

For N pairs with logits L_ij = exp(s) <I_i, T_j> (image i against text j, unit embeddings):

    L_i2t = -1/N sum_i log( exp(L_ii) / sum_j exp(L_ij) )         each image picks its text among N
    L_t2i = -1/N sum_j log( exp(L_jj) / sum_i exp(L_ij) )         each text picks its image among N
    loss  = (L_i2t + L_t2i) / 2

i.e. cross-entropy over the rows and over the columns of L with the diagonal as targets
(`labels = np.arange(n)` in the paper's pseudo-code). Duplicates are handled as the paper does: the targets
stay the plain diagonal, so when two pairs of a batch share a caption, the other copy counts as a negative
(identical texts get identical logits, so an image can do no better than split its probability between
them; the loss floor rises by log(copies) for those rows, and nothing is pushed apart that is not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of an (N, N) logit matrix whose diagonal holds the positive pairs."""
    if logits_per_image.dim() != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise ValueError(f"expected square (N, N) logits, got shape {tuple(logits_per_image.shape)}")
    labels = torch.arange(len(logits_per_image), device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


def clip_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, scale: torch.Tensor | float
              ) -> torch.Tensor:
    """`info_nce` of scale * I T^T for (N, E) image and text embeddings (normalise them first for CLIP)."""
    return info_nce(scale * image_embeddings @ text_embeddings.T)

