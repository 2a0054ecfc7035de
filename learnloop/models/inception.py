"""Inception-v3 (Szegedy et al., 2016) as the FID feature extractor of Heusel et al. (2017), in pure torch.

FID's reference numbers come from the TensorFlow graph `pool_3` of the 2015-12-05 Inception model.
pytorch-fid (Seitzer, 2020) ported it: torchvision's Inception-v3 layout with 1008 output classes, no
auxiliary head, and four blocks patched to match TensorFlow:
- FIDInceptionA / FIDInceptionC / FIDInceptionE_1: the pooling branch is avg_pool2d(3, 1, 1) with
  count_include_pad=False (padding is not averaged in);
- FIDInceptionE_2 (Mixed_7c): the pooling branch is max_pool2d(3, 1, 1) instead of an average.
Every conv is BasicConv2d = conv (no bias) -> BatchNorm2d(eps=0.001) -> ReLU.

Input pipeline (pytorch-fid): images x in [0, 1] (grey images are repeated to 3 channels) are resized to
299 x 299 with bilinear interpolation (align_corners=False), then mapped to [-1, 1] by x <- 2x - 1.
`forward` returns the 2048-d global-average-pooled features phi(x) (the `pool_3` activations used by FID
and KID); `logits = fc(phi)` (1008 classes, as in the TF graph) feed the Inception Score. `pool3(x)` is the
network without that input pipeline, for callers that prepare images themselves (the "inception-v3"
extractor of `learnloop.evaluation.extractors`).

Module names equal torchvision's and pytorch-fid's (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.
running_mean`, ..., `fc.weight`), so the state dict of `pt_inception-2015-12-05-6726825d.pth` loads
unchanged with `load_inception_weights(path)` (safetensors, or `torch.load(weights_only=True)`). Nothing
is downloaded: the user supplies the file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from learnloop.errors import CorruptFileError, UserError
from learnloop.utils.batched import eval_in_batches

FID_INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (pool="avg", FIDInceptionE_1) and Mixed_7c (pool="max", FIDInceptionE_2)."""

    def __init__(self, in_channels: int, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got '{pool}'")
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = _avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    name = "inception-v3 (pytorch-fid, 2048-d pool3)"
    feature_dim = FEATURE_DIM

    def __init__(self, resize_input: bool = True, batch_size: int = 50):
        super().__init__()
        self.resize_input, self.batch_size = resize_input, batch_size
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1], (N, 1 or 3, H, W) -> (N, 3, 299, 299) in [-1, 1]."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize_input:
            x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): (N, 2048) pool_3 features of float images in [0, 1]."""
        return self.pool3(self.preprocess(x))

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x) of already preprocessed images (N, 3, H, W) in [-1, 1] (H, W >= 75; FID uses 299): what
        `learnloop.evaluation.extractors` calls after its own resize rule."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self(x))

    def _batched(self, images: torch.Tensor, fn) -> torch.Tensor:
        return torch.cat(eval_in_batches(self, _to_unit_float(images), fn, self.batch_size))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 2048) features of uint8 (or [0, 1] float) images (N, 1 or 3, H, W), eval mode, batched."""
        return self._batched(images, self)

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1008) softmax(fc(phi)) for the Inception Score."""
        return self._batched(images, lambda x: F.softmax(self.logits(x).double(), 1).float())

    def features_and_probs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def both(x):
            f = self(x)
            return torch.cat([f, F.softmax(self.fc(f).double(), 1).float()], 1)

        out = self._batched(images, both)
        return out[:, :FEATURE_DIM], out[:, FEATURE_DIM:]


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise UserError(f"images must be a non-empty (N, 1 or 3, H, W) tensor, got {shape}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point() or not torch.isfinite(images).all():
        raise UserError("images must be uint8, or finite float in [0, 1]")
    return images.float().clamp(0, 1)


def load_inception_weights(path: str | Path, model: FIDInceptionV3 | None = None) -> FIDInceptionV3:
    """Load a pt_inception state dict (safetensors, or a torch file read with weights_only=True)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"Inception weights not found: {path} (e.g. pt_inception-2015-12-05-6726825d.pth "
                        f"from pytorch-fid's releases, supplied by you; nothing is downloaded)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- safetensors, unpickling and zip errors differ by torch version
        raise CorruptFileError(f"{path}: not a readable state dict ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CorruptFileError(f"{path}: expected a flat state dict of tensors")
    model = model or FIDInceptionV3()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CorruptFileError(f"{path}: weights do not fit FIDInceptionV3 ({first})") from None
    return model.eval()
