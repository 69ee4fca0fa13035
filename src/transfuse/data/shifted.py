"""A shifted domain of another registered image data set: rotated and/or noised copies.

The domains multi-domain and robust methods train and test on (Meta-DMoE's unseen domain, rotated
MNIST in domain-generalisation work, Gaussian-noise corruptions as in ImageNet-C): the shift is
applied to the base data set's (normalised) inputs, train and test alike, with a seeded generator.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, build_data, datasets, fingerprint_tensors


def rotate_images(images: Tensor, degrees: float, fill: float) -> Tensor:
    """Rotate (N, C, H, W) images by ``degrees`` about their centre (bilinear), filling with ``fill``."""
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    affine = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=images.dtype).expand(len(images), 2, 3)  # (N, 2, 3)
    grid = F.affine_grid(affine, list(images.shape), align_corners=False)
    shifted = images - fill  # zero padding of the shifted images = padding with `fill`
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _shift(split: Optional[IndexedTensors], rotate: float, noise: float, fill: float, gen: torch.Generator):
    if split is None:
        return None
    x = split.inputs
    if rotate:
        x = rotate_images(x, rotate, fill)
    if noise:
        x = x + noise * torch.randn(x.shape, generator=gen)
    return IndexedTensors(x, split.labels, split.index)


@datasets.register("shifted")
def shifted(
    *,
    base: str = "fashion_mnist",
    base_params: Optional[Dict[str, Any]] = None,
    rotate: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> DataSplits:
    """Another image data set (``base`` with ``base_params``) rotated by ``rotate`` degrees and/or noised.

    noise: std of Gaussian noise added to the normalised inputs (1.0 = one pixel std of the base).
    Rotation fills the corners with the base's background (its smallest input value).
    """
    if base == "shifted":
        raise TransfuseError("shifted needs a plain base data set (fashion_mnist, mnist5k, digits), not shifted")
    if noise < 0:
        raise TransfuseError(f"shifted noise is a standard deviation and must be >= 0; got {noise}")
    data = build_data(base, base_params)
    if len(data.in_shape) != 3:
        raise TransfuseError(f"shifted rotates images (C, H, W); {base!r} gives inputs of shape {data.in_shape}")
    fill = float(data.train.inputs.min())
    gen = torch.Generator().manual_seed(seed)
    train = _shift(data.train, rotate, noise, fill, gen)
    test = _shift(data.test, rotate, noise, fill, gen)
    return DataSplits(
        name=f"{data.name}-rot{rotate:g}-noise{noise:g}",
        train=train,
        test=test,
        num_classes=data.num_classes,
        in_shape=data.in_shape,
        fingerprint=fingerprint_tensors(train.inputs, train.labels, train.index, extra=f"shifted {data.fingerprint} r{rotate} n{noise} s{seed}"),
        class_names=data.class_names,
    )
