"""The Fashion-MNIST evaluator: a small CNN whose features and class probabilities score generated images.

FID, KID, precision/recall and density/coverage compare *features* of real and generated images, and the
Inception Score uses *class probabilities* (see `learnloop.metrics.generative`). Inception-v3 features
(Szegedy et al., 2016) are the standard for natural images (see `learnloop.models.inception`); on 28x28
grey Fashion-MNIST a classifier trained on that data sees the garment features that matter, and it scores
10,000 images on a CPU in seconds instead of upsampling each to 299x299. Values are therefore only
comparable between runs that use this same evaluator (its protocol is stated in every report).

Architecture (`FashionEvaluator`): input x in [0, 1] is standardised, x <- (x - MEAN) / STD, then
three blocks  [conv3x3 - BN (Ioffe & Szegedy, 2015) - ReLU - maxpool2]  with 32, 64, 128 channels
(28 -> 14 -> 7 -> 3), flatten, Dropout, Linear(1152, D) - ReLU  =  phi(x), the D = 256-d penultimate
features, then Dropout, Linear(D, 10) = logits; probabilities p(y|x) = softmax(logits).

The trained weights ship with the package (`learnloop/assets/fashion_evaluator.safetensors`, written by
`bench/train_evaluator.py`), as do the reference statistics mu = mean(phi), Sigma = cov(phi) of the train
and test splits (`fashion_evaluator_stats.safetensors`, float64) and a JSON card with its test accuracy.
Generative evaluation takes it by name, `learnloop.evaluation.get_extractor("fashion")` (the default), which
also fits images of other sizes and channel counts to its 1 x 28 x 28 input by one documented rule.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from learnloop.errors import CorruptFileError, UserError
from learnloop.utils.batched import eval_in_batches

MEAN, STD = 0.2860, 0.3530                    # Fashion-MNIST train pixel mean / std in [0, 1]
WEIGHTS_FILE = "fashion_evaluator.safetensors"
STATS_FILE = "fashion_evaluator_stats.safetensors"
CARD_FILE = "fashion_evaluator.json"
SPLITS = ("train", "test")


def assets_dir() -> Path:
    return Path(str(resources.files("learnloop") / "assets"))


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] or float in [0, 1], shape (N, 1, 28, 28) or (N, 28, 28) -> float32 (N, 1, 28, 28)."""
    if not torch.is_tensor(images):
        raise UserError(f"images must be a torch tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise UserError(f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise UserError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    x = images.float()
    if not torch.isfinite(x).all():
        raise UserError("images contain NaN or Inf")
    if len(x) and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise UserError(f"float images must lie in [0, 1], "
                        f"got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x.clamp(0, 1)


class FashionEvaluator(nn.Module):
    def __init__(self, channels: tuple[int, int, int] = (32, 64, 128), feature_dim: int = 256,
                 num_classes: int = 10, dropout: float = 0.1, batch_size: int = 500):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))

        c1, c2, c3 = channels
        self.conv = nn.Sequential(block(1, c1), block(c1, c2), block(c2, c3))
        self.embedding = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c3 * 3 * 3, feature_dim),
                                       nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.feature_dim, self.num_classes, self.batch_size = feature_dim, num_classes, batch_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): penultimate features of float images in [0, 1], shape (N, 1, 28, 28)."""
        x = (x - MEAN) / STD
        return self.embedding(self.conv(x.contiguous(memory_format=torch.channels_last)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))

    def _batched(self, images: torch.Tensor, fn) -> torch.Tensor:
        outs = eval_in_batches(self, to_unit_float(images), fn, self.batch_size)
        if not outs:
            return torch.zeros(0, self.feature_dim if fn == self.embed else self.num_classes)
        return torch.cat(outs)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) float32 penultimate features of uint8 (or [0, 1] float) images, in eval mode, batched."""
        return self._batched(images, self.embed)

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 10) class probabilities softmax(logits)."""
        return self._batched(images, lambda x: F.softmax(self(x).double(), dim=1).float())

    def features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both in one pass over the network."""
        def both(x):
            f = self.embed(x)
            return torch.cat([f, F.softmax(self.classifier(f).double(), dim=1).float()], 1)

        out = self._batched(images, both)
        if out.shape[1] != self.feature_dim + self.num_classes:   # empty input
            return torch.zeros(0, self.feature_dim), torch.zeros(0, self.num_classes)
        return out[:, :self.feature_dim], out[:, self.feature_dim:]


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        raise UserError(f"{path} is missing; run `python bench/train_evaluator.py` to create it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CorruptFileError(f"{path}: not a safetensors file or truncated ({type(e).__name__})") from None


def load_fashion_evaluator(path: str | Path | None = None) -> FashionEvaluator:
    """The shipped evaluator (or weights at `path`), in eval mode with gradients off."""
    path = Path(path) if path is not None else assets_dir() / WEIGHTS_FILE
    state = _load_safetensors(path)
    model = FashionEvaluator()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CorruptFileError(f"{path}: weights do not fit FashionEvaluator ({first})") from None
    model.to(memory_format=torch.channels_last)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reference_stats(split: str = "test", path: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, Sigma) in float64 of the evaluator's features over the whole `split` ("train" or "test")."""
    if split not in SPLITS:
        raise UserError(f"unknown reference split '{split}'; choose from {', '.join(SPLITS)}")
    path = Path(path) if path is not None else assets_dir() / STATS_FILE
    stats = _load_safetensors(path)
    try:
        return stats[f"{split}_mu"], stats[f"{split}_sigma"]
    except KeyError:
        raise CorruptFileError(f"{path}: no statistics for split '{split}'") from None


def evaluator_card(path: str | Path | None = None) -> dict:
    """The JSON card: test accuracy, training command, feature dim, statistics sizes."""
    path = Path(path) if path is not None else assets_dir() / CARD_FILE
    if not path.exists():
        raise UserError(f"{path} is missing; run `python bench/train_evaluator.py` to create it")
    return json.loads(path.read_text(encoding="utf-8"))
