"""CNN: a small LeNet-style network (LeCun et al. 1998) of two 3x3 convolutions and two linear layers, the demo teacher.

conv3x3 -> ReLU -> maxpool2 per conv layer, then flatten -> Linear -> ReLU -> Linear. With the
default channels (32, 64) and hidden 128 it has 421,642 parameters for 1x28x28 inputs.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from torch import Tensor, nn

from ..errors import TransfuseError
from . import models


class CNN(nn.Module):
    def __init__(self, in_shape: Tuple[int, int, int], channels: Sequence[int], hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(c * h * w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, C_in, H, W) -> (B, C)


@models.register("cnn")
def cnn(
    *,
    in_shape: Tuple[int, ...],
    num_classes: int,
    channels: Union[int, Sequence[int]] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.0,
) -> nn.Module:
    """Small LeNet-style CNN (LeCun et al. 1998): conv3x3-ReLU-pool per channels entry, then two linear layers; 0.42M params at 1x28x28."""
    channels = [channels] if isinstance(channels, int) else list(channels)  # one int means one entry
    shape = tuple(int(s) for s in in_shape)
    if len(shape) == 2:  # (H, W) grey images
        shape = (1,) + shape
    if len(shape) != 3:
        raise TransfuseError(f"cnn needs image inputs shaped (C, H, W); got in_shape {tuple(in_shape)} (use mlp for vectors)")
    if not channels or any(int(c) < 1 for c in channels) or hidden < 1:
        raise TransfuseError(f"cnn channels and hidden must be positive; got channels={list(channels)} hidden={hidden}")
    side = min(shape[1:]) // 2 ** len(channels)
    if side < 1:
        raise TransfuseError(
            f"cnn with {len(channels)} pooling layers shrinks {shape[1]}x{shape[2]} images to nothing; "
            "use fewer channels entries or larger images (e.g. digits size=16)"
        )
    model = CNN(shape, [int(c) for c in channels], int(hidden), num_classes, dropout)
    if len(tuple(in_shape)) == 2:
        return nn.Sequential(_AddChannel(), model)
    return model


class _AddChannel(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(1)  # (B, H, W) -> (B, 1, H, W)
