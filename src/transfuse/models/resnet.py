"""ResNet: a small residual network for 28x28 images (He et al. 2016, "Deep Residual Learning"), BasicBlocks.

A 3x3 stem, then one stage per ``blocks`` entry with widths width, 2*width, 4*width, ... and
stride 2 from the second stage on (the CIFAR ResNet layout of the paper's section 4.2), global
average pooling and a linear head. Defaults give 77,754 parameters for 1x28x28 and 10 classes.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from torch import Tensor, nn

from ..errors import TransfuseError
from . import models


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))  # (B, c_out, H/stride, W/stride)


class ResNet(nn.Module):
    def __init__(self, channels: int, blocks: Sequence[int], width: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages: list[nn.Module] = []
        c = width
        for i, n in enumerate(blocks):
            out = width * 2**i
            for j in range(n):
                stages.append(BasicBlock(c, out, stride=2 if (i > 0 and j == 0) else 1))
                c = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stages(self.stem(x))  # (B, D, H', W')
        return self.head(self.pool(h).flatten(1))  # (B, C)


@models.register("resnet")
def resnet(
    *,
    in_shape: Tuple[int, ...],
    num_classes: int,
    width: int = 16,
    blocks: Union[int, Sequence[int]] = (1, 1, 1),
) -> nn.Module:
    """Small ResNet with BasicBlocks (He et al. 2016, CIFAR layout) for 28x28 images; blocks per stage, widths width*2^i."""
    blocks = [blocks] if isinstance(blocks, int) else list(blocks)  # one int means one entry
    if len(in_shape) != 3:
        raise TransfuseError(f"resnet needs image inputs shaped (C, H, W); got in_shape {tuple(in_shape)}")
    if width < 1 or not blocks or any(int(b) < 1 for b in blocks):
        raise TransfuseError(f"resnet width and blocks must be positive; got width={width} blocks={list(blocks)}")
    return ResNet(int(in_shape[0]), [int(b) for b in blocks], int(width), num_classes)
