"""The first models a learner meets: logistic/softmax regression, the multilayer perceptron, a small CNN.

- Logistic regression: p(y=1|x) = sigmoid(w^T x + b) (one output); softmax regression:
  p(y=c|x) = softmax(W x + b)_c. Both are a single linear layer; the loss makes the difference.
- MLP (Rumelhart, Hinton & Williams, 1986): h_{l+1} = Dropout(act(BN(W_l h_l + b_l))), with
  Batch Normalization (Ioffe & Szegedy, 2015) and Dropout (Srivastava et al., 2014) optional.
- CNN (LeCun et al., 1998 style): [conv3x3 - BN - ReLU - maxpool2] x 2, then an MLP head.

Initialisations (for the gradient-flow study): "normal" N(0, 1); "xavier" U(+-sqrt(6 / (fan_in + fan_out)))
(Glorot & Bengio, 2010); "kaiming" N(0, 2 / fan_in) (He et al., 2015); "default" keeps torch's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}
INITS = ("default", "normal", "xavier", "kaiming")


def init_weights(module: nn.Module, scheme: str) -> None:
    if scheme not in INITS:
        raise ValueError(f"unknown init '{scheme}'; choose from {', '.join(INITS)}")
    if scheme == "default":
        return
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if scheme == "normal":
                nn.init.normal_(m.weight, 0.0, 1.0)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class LinearClassifier(nn.Sequential):
    """Logistic regression (num_classes=1 -> one logit) or softmax regression (num_classes >= 2)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__(nn.Flatten(), nn.Linear(in_features, num_classes))


class MLP(nn.Sequential):
    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (256, 128),
                 activation: str = "relu", batchnorm: bool = True, dropout: float = 0.0, init: str = "default"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; choose from {', '.join(ACTIVATIONS)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
        init_weights(self, init)


class SmallCNN(nn.Module):
    """Two conv blocks (channels c1, c2) and a hidden dense layer; ~0.4M parameters at the defaults."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, channels: tuple[int, int] = (32, 64),
                 hidden: int = 128, dropout: float = 0.3, image_size: int = 28):
        super().__init__()
        c1, c2 = channels

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(in_channels, c1), block(c1, c2))
        side = image_size // 4
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c2 * side * side, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (the hidden dense layer's ReLU output)."""
        return self.head[:4](self.features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flat_size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
