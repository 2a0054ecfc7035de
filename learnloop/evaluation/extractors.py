"""Feature extractors for generative evaluation, by name, and the one rule that fits images to them.

FID, KID, PRDC and the Inception Score compare features phi(x) (and class probabilities p(y|x)) of a fixed
network (see `learnloop.evaluation.generative`). An extractor declares the input it takes, an `ImageSpec`
(channels C, size H x W, value range [lo, hi]), and every image reaches it through `prepare_images`:

    1. values:   uint8 v -> v / 255;  float x given in [a, b] (default [0, 1]; a tanh generator's [-1, 1])
                 -> (x - a) / (b - a), clamped to [0, 1] (values outside [a, b] by more than 1e-6 (b - a),
                 NaN or Inf are a UserError)
    2. channels: RGB -> grey by ITU-R BT.601 luma, Y = 0.299 R + 0.587 G + 0.114 B (before resizing);
                 grey -> RGB by repeating the channel (after resizing); any other count is a UserError
    3. size:     to (H, W) with half-pixel centres (align_corners=False). When a side shrinks: antialiased
                 bicubic (Keys kernel a = -0.5 widened by the scale factor, PIL's BICUBIC), clamped to
                 [0, 1], as clean-fid resizes (Parmar et al., 2022: aliased downsampling shifts FID);
                 otherwise plain bilinear, as pytorch-fid upsamples to 299 x 299 (so a 28 x 28 image reaches
                 Inception-v3 exactly as `FIDInceptionV3.features` would feed it)
    4. range:    [0, 1] -> [lo, hi] by x (hi - lo) + lo
Every step is skipped when it has nothing to do, so 28 x 28 grey images reach the Fashion evaluator exactly as
before the rule existed. Antialiased bicubic keeps more of a shrunk image than antialiased bilinear, which
the Fashion evaluator reads as blur: 64 x 64 RGB (bicubic) versions of real images come back with features at
0.17 of the distance between two different images (0.25 with bilinear), about what a 1-pixel shift does.
Upsampled Fashion-MNIST images carry no more detail than the 28 x 28 originals: features of resized images
are comparable between runs of the same protocol, not to published numbers measured on natural images.

Registry:
    register_extractor(name, factory)      factory(**options) -> Extractor
    get_extractor(name, **options)         one shared instance per (name, options), eval mode, no gradients
    extractor_names(), clear_extractor_cache()
Built in: "fashion" (the shipped Fashion-MNIST evaluator, `learnloop.models.evaluator`: 1 x 28 x 28 in [0, 1],
256-d features, 10 classes; the default) and "inception-v3" (`learnloop.models.inception`, pytorch-fid's
port of the TF FID graph: 3 x 299 x 299 in [-1, 1], 2048-d pool_3 features, 1008 classes; option
`weights=PATH`, a state dict you supply). Any network fits with `ModuleExtractor(module, spec, head=...)`.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from learnloop.errors import UserError
from learnloop.utils.batched import eval_in_batches

LUMA_601 = (0.299, 0.587, 0.114)
UNIT = (0.0, 1.0)
DEFAULT = "fashion"


# --- the input an extractor takes, and the rule that fits images to it ---------------------------------
@dataclass(frozen=True)
class ImageSpec:
    """What an extractor's network takes: `channels` (1 grey or 3 RGB), `size` (H, W), `value_range`."""

    channels: int
    size: tuple[int, int]
    value_range: tuple[float, float] = UNIT

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"ImageSpec.channels must be 1 or 3, got {self.channels}")
        if len(self.size) != 2 or not all(isinstance(s, int) and s > 0 for s in self.size):
            raise ValueError(f"ImageSpec.size must be two positive ints (H, W), got {self.size}")
        object.__setattr__(self, "size", tuple(self.size))
        object.__setattr__(self, "value_range", check_value_range(self.value_range, ValueError))

    def __str__(self) -> str:
        lo, hi = self.value_range
        return f"{self.channels}x{self.size[0]}x{self.size[1]} in [{lo:g}, {hi:g}]"


def check_value_range(value_range, error=UserError) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise error(f"value_range must be two numbers (lo, hi), got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise error(f"value_range must be finite with lo < hi, got ({lo:g}, {hi:g})")
    return lo, hi


def check_images(images, value_range=UNIT, what: str = "images") -> torch.Tensor:
    """Validate without converting: a (N, C, H, W) view ((N, H, W) gains C = 1) of uint8 images, or of finite
    float images inside `value_range`; C must be 1 or 3."""
    if not torch.is_tensor(images):
        raise UserError(f"{what} must be a torch tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[2] < 1 or images.shape[3] < 1:
        raise UserError(f"{what} must have shape (N, C, H, W) or (N, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise UserError(f"{what} have {images.shape[1]} channels (shape {tuple(images.shape)}); only grey (1) "
                        f"and RGB (3) images convert to an extractor's input")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise UserError(f"{what} must be uint8 or float, got {images.dtype}")
    lo, hi = check_value_range(value_range)
    if len(images):
        if not torch.isfinite(images).all():
            raise UserError(f"{what} contain NaN or Inf")
        tol = 1e-6 * (hi - lo)
        low, high = float(images.min()), float(images.max())
        if low < lo - tol or high > hi + tol:
            raise UserError(f"float {what} must lie in [{lo:g}, {hi:g}] (value_range), "
                            f"got range [{low:.3g}, {high:.3g}]")
    return images


def _convert(images: torch.Tensor, spec: ImageSpec, value_range=UNIT) -> torch.Tensor:
    """Steps 1-4 of the module docstring on already checked images."""
    if images.dtype == torch.uint8:
        x = images.float().div_(255.0)
    else:
        lo, hi = check_value_range(value_range)
        x = images.float()
        if (lo, hi) != UNIT:
            x = (x - lo) / (hi - lo)
        x = x.clamp(0, 1)
    if x.shape[1] == 3 and spec.channels == 1:
        r, g, b = LUMA_601
        x = r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]
    h, w = x.shape[-2:]
    if (h, w) != spec.size and not len(x):
        x = x.new_zeros(0, x.shape[1], *spec.size)
    elif (h, w) != spec.size:
        if spec.size[0] < h or spec.size[1] < w:
            x = F.interpolate(x, size=spec.size, mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        else:
            x = F.interpolate(x, size=spec.size, mode="bilinear", align_corners=False)
    if x.shape[1] == 1 and spec.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    lo, hi = spec.value_range
    if (lo, hi) != UNIT:
        x = x * (hi - lo) + lo
    return x


def prepare_images(images, spec: ImageSpec, value_range=UNIT) -> torch.Tensor:
    """THE resize rule (module docstring): uint8, or float images in `value_range`, (N, 1 or 3, h, w) or
    (N, h, w) -> float32 (N, spec.channels, *spec.size) in spec.value_range."""
    return _convert(check_images(images, value_range), spec, value_range)


# --- extractors -----------------------------------------------------------------------------------------
class Extractor(ABC):
    """Features phi(x) (N, feature_dim) and, with a classifier head (num_classes > 0), p(y|x) (N, num_classes)
    of images given in any format `prepare_images` converts. Subclasses implement `forward` on prepared
    batches and may ship `reference_stats(split)` for the Fashion-MNIST splits."""

    name: str = "extractor"          # shown in every report's protocol
    spec: ImageSpec
    feature_dim: int
    num_classes: int = 0             # 0: no classifier, so no Inception Score or class histogram
    batch_size: int = 256
    cache_key: tuple | None = None   # set by get_extractor: results for this instance may be cached

    @abstractmethod
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features, probabilities or None) of a prepared batch (spec's channels, size and range)."""

    def reference_stats(self, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Precomputed (mu, Sigma) of a Fashion-MNIST split, if the extractor ships them (else None)."""
        return None

    def describe(self) -> str:
        return f"{self.name}, input {self.spec}"

    def prepare(self, images, value_range=UNIT) -> torch.Tensor:
        return prepare_images(images, self.spec, value_range)

    def features_and_probs(self, images, value_range=UNIT) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both in one pass, converted by the rule one batch at a time (a 10k x 3 x 299 x 299 float tensor
        would not fit in memory)."""
        x = check_images(images, value_range)
        feats, probs = [], []
        for lo in range(0, len(x), self.batch_size):
            f, p = self.forward(_convert(x[lo:lo + self.batch_size], self.spec, value_range))
            feats.append(f.float())
            if p is not None:
                probs.append(p.float())
        if not feats:
            return torch.zeros(0, self.feature_dim), torch.zeros(0, self.num_classes) if self.num_classes else None
        return torch.cat(feats), torch.cat(probs) if probs else None

    def features(self, images, value_range=UNIT) -> torch.Tensor:
        return self.features_and_probs(images, value_range)[0]

    def probs(self, images, value_range=UNIT) -> torch.Tensor:
        if not self.num_classes:
            raise UserError(f"extractor '{self.name}' has no classifier head: no class probabilities")
        return self.features_and_probs(images, value_range)[1]


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return F.softmax(logits.double(), dim=1).float()


class ModuleExtractor(Extractor):
    """Any network as an extractor: `module` maps prepared images (N, *spec) to features (N, D); an optional
    `head` maps features to logits (N, K), whose softmax gives p(y|x). Run in eval mode, without gradients,
    in batches of `batch_size`. `feature_dim` / `num_classes` are measured on one blank image when omitted."""

    def __init__(self, module: nn.Module, spec: ImageSpec, name: str | None = None, head: nn.Module | None = None,
                 batch_size: int = 256, feature_dim: int | None = None, num_classes: int | None = None):
        if not isinstance(module, nn.Module) or (head is not None and not isinstance(head, nn.Module)):
            raise TypeError("ModuleExtractor takes torch.nn.Module objects for module and head")
        if not isinstance(spec, ImageSpec):
            raise TypeError(f"spec must be an ImageSpec, got {type(spec).__name__}")
        self.module, self.head, self.spec = module, head, spec
        self.name = name or type(module).__name__
        self.batch_size = int(batch_size)
        if feature_dim is None or (head is not None and num_classes is None):
            blank = torch.full((1, spec.channels, *spec.size), spec.value_range[0])
            f, p = self.forward(blank)
            feature_dim = f.shape[1] if feature_dim is None else feature_dim
            num_classes = p.shape[1] if p is not None and num_classes is None else num_classes
        self.feature_dim, self.num_classes = int(feature_dim), int(num_classes or 0) if head is not None else 0

    def forward(self, x):
        def run(batch):
            f = self.module(batch)
            if f.ndim != 2:
                raise UserError(f"extractor '{self.name}': the module must return (N, D) features, "
                                f"got shape {tuple(f.shape)}")
            return f, (_softmax(self.head(f)) if self.head is not None else None)

        with torch.no_grad():
            if self.head is not None:
                head_mode = self.head.training
                self.head.eval()
            try:
                (out,) = eval_in_batches(self.module, x, run, max(len(x), 1))
            finally:
                if self.head is not None:
                    self.head.train(head_mode)
        return out


class FashionExtractor(Extractor):
    """The shipped Fashion-MNIST evaluator (`learnloop.models.evaluator.FashionEvaluator`) and its shipped
    reference statistics. Batches of the evaluator's own size reach its `features_and_probs` unchanged, so
    features are bit-for-bit those of `load_fashion_evaluator().features_and_probs(images)`."""

    spec = ImageSpec(1, (28, 28), UNIT)

    def __init__(self, model=None):
        from learnloop.models.evaluator import load_fashion_evaluator

        self.model = model if model is not None else load_fashion_evaluator()
        self.feature_dim, self.num_classes = self.model.feature_dim, self.model.num_classes
        self.batch_size = self.model.batch_size
        self.name = f"fashion-evaluator ({self.feature_dim}-d penultimate)"

    def forward(self, x):
        return self.model.features_and_probs(x)

    def reference_stats(self, split):
        from learnloop.models.evaluator import reference_stats

        return reference_stats(split)


class InceptionExtractor(Extractor):
    """FID Inception-v3 (`learnloop.models.inception.FIDInceptionV3`, pytorch-fid's weights). The rule does
    its input pipeline (grey repeated, bilinear to 299 x 299, [0, 1] -> [-1, 1]) so the network sees exactly
    what `FIDInceptionV3.features` would feed it when upsampling; downsampling is antialiased (step 3)."""

    def __init__(self, model, batch_size: int = 50):
        from learnloop.models.inception import FEATURE_DIM, FID_INPUT_SIZE, NUM_CLASSES

        self.model = model
        self.spec = ImageSpec(3, (FID_INPUT_SIZE, FID_INPUT_SIZE), (-1.0, 1.0))
        self.feature_dim, self.num_classes, self.batch_size = FEATURE_DIM, NUM_CLASSES, int(batch_size)
        self.name = model.name

    def forward(self, x):
        def both(batch):
            f = self.model.pool3(batch)
            return torch.cat([f, _softmax(self.model.fc(f))], 1)

        (out,) = eval_in_batches(self.model, x, both, max(len(x), 1))
        return out[:, :self.feature_dim], out[:, self.feature_dim:]


# --- registry -------------------------------------------------------------------------------------------
_FACTORIES: dict[str, Callable[..., Extractor]] = {}
_INSTANCES: dict[tuple, Extractor] = {}
_GENERATION = [0]                    # bumped on every registration: instances of a replaced factory expire


def register_extractor(name: str, factory: Callable[..., Extractor], *, replace: bool = False) -> None:
    """Make `factory(**options) -> Extractor` available as `name` (e.g. for `--set eval.extractor=name`).
    Registering a taken name needs `replace=True`."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise UserError(f"extractor names use letters, digits, '-', '_' and '.', got {name!r}")
    if not callable(factory):
        raise TypeError(f"register_extractor('{name}'): factory must be callable, got {type(factory).__name__}")
    if name in _FACTORIES and not replace:
        raise UserError(f"extractor '{name}' is already registered; pass replace=True to replace it")
    _FACTORIES[name] = factory
    _GENERATION[0] += 1
    for key in [k for k in _INSTANCES if k[0] == name]:
        del _INSTANCES[key]


def extractor_names() -> list[str]:
    return sorted(_FACTORIES)


def clear_extractor_cache() -> None:
    """Drop the shared instances (e.g. to free Inception's 95 MB); the next get_extractor builds anew."""
    _INSTANCES.clear()
    _GENERATION[0] += 1


def _check_options(name: str, factory, options: dict) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in options:
        if key not in known:
            raise UserError(f"extractor '{name}' has no option '{key}'; its options: {', '.join(known) or 'none'}")


def get_extractor(name: str = DEFAULT, **options) -> Extractor:
    """The extractor registered as `name`, built with `options` once per process and shared afterwards."""
    if not isinstance(name, str) or name not in _FACTORIES:
        shown = repr(name) if isinstance(name, str) else type(name).__name__
        raise UserError(f"unknown extractor {shown}; known: {', '.join(extractor_names())}")
    factory = _FACTORIES[name]
    _check_options(name, factory, options)
    try:
        key = (name, _GENERATION[0], tuple(sorted(options.items())))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _INSTANCES:
        return _INSTANCES[key]
    extractor = factory(**options)
    if not isinstance(extractor, Extractor):
        raise TypeError(f"extractor '{name}': the factory returned {type(extractor).__name__}, not an Extractor "
                        "(wrap a network in ModuleExtractor(module, ImageSpec(...)))")
    if key is not None:
        extractor.cache_key = key
        _INSTANCES[key] = extractor
    return extractor


def _fashion() -> Extractor:
    return FashionExtractor()


def _inception(weights: str | Path = "", batch_size: int = 50) -> Extractor:
    if not weights:
        raise UserError("extractor 'inception-v3' needs the option weights=PATH (pytorch-fid's "
                        "pt_inception-2015-12-05-6726825d.pth, supplied by you; in a config: eval.weights=PATH)")
    from learnloop.models.inception import load_inception_weights

    return InceptionExtractor(load_inception_weights(weights), batch_size)


register_extractor("fashion", _fashion)
register_extractor("inception-v3", _inception)
