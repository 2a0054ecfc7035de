"""Symmetric InfoNCE (learnloop.losses.contrastive) against a direct loop over the pairs, duplicates included."""

import math

import pytest
import torch
import torch.nn.functional as F

from learnloop.losses.contrastive import clip_loss, info_nce


def loop_info_nce(logits):
    """The definition, one pair at a time, in Python floats."""
    L = logits.tolist()
    n = len(L)
    i2t = -sum(L[i][i] - math.log(sum(math.exp(L[i][j]) for j in range(n))) for i in range(n)) / n
    t2i = -sum(L[j][j] - math.log(sum(math.exp(L[i][j]) for i in range(n))) for j in range(n)) / n
    return (i2t + t2i) / 2


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_matches_direct_loop(n):
    g = torch.Generator().manual_seed(n)
    logits = torch.randn(n, n, generator=g, dtype=torch.float64) * 4
    assert info_nce(logits).item() == pytest.approx(loop_info_nce(logits), rel=1e-12)


def test_one_pair_and_perfect_alignment():
    assert info_nce(torch.tensor([[3.0]])).item() == 0.0
    assert info_nce(torch.eye(4, dtype=torch.float64) * 100).item() == pytest.approx(0.0, abs=1e-30)
    # uniform logits: every row and column is a guess among n
    assert info_nce(torch.zeros(6, 6)).item() == pytest.approx(math.log(6))


def test_duplicate_captions_keep_plain_diagonal_targets():
    """Pairs 0 and 1 share a caption: texts 0 and 1 have the same embedding. With plain diagonal targets
    (as in the paper) the copy is a negative, so even perfect embeddings leave log 2 in rows and columns 0, 1."""
    img = torch.eye(4, dtype=torch.float64)
    img[1] = img[0]                                  # images 0 and 1 alike too (same class and attributes)
    txt = img.clone()
    scale = 60.0
    logits = scale * img @ txt.T
    loss = clip_loss(img, txt, scale)
    assert loss.item() == pytest.approx(loop_info_nce(logits), rel=1e-12)
    assert loss.item() == pytest.approx(2 * math.log(2) / 4, rel=1e-12)   # rows and columns 0, 1: log 2 each
    # only the text copy duplicated (the images differ): image->text rows 0 and 1 split their mass
    img2 = torch.eye(4, dtype=torch.float64)
    txt2 = img2.clone()
    txt2[1] = (img2[0] + img2[1]) / math.sqrt(2)
    txt2[0] = txt2[1]
    logits2 = scale * img2 @ txt2.T
    assert clip_loss(img2, txt2, scale).item() == pytest.approx(loop_info_nce(logits2), rel=1e-12)


def test_clip_loss_is_info_nce_of_scaled_cosines_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    b = F.normalize(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    s = torch.tensor(14.0, dtype=torch.float64, requires_grad=True)
    assert clip_loss(a, b, s).item() == pytest.approx(loop_info_nce(14.0 * a @ b.T), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x, y, t: clip_loss(x, y, t), (a, b, s))
    # a symmetric loss: swapping images and texts transposes the logits and changes nothing
    assert clip_loss(a, b, s).item() == pytest.approx(clip_loss(b, a, s).item(), rel=1e-12)


def test_rejects_non_square_logits():
    with pytest.raises(ValueError, match="square"):
        info_nce(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="square"):
        info_nce(torch.zeros(3))
