"""Digits: scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits, Alpaydin & Kaynak 1998).

Pixels 0..16 are scaled to [0, 1], optionally upsampled by bilinear interpolation to ``size``,
and normalised with the training split's mean and std. A seeded class-stratified
``test_fraction`` is held out; sample ids are positions in scikit-learn's array.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, datasets, fingerprint_tensors
from ._common import _generator, apply_labelled, stratified_split


@datasets.register("digits")
def digits(
    *,
    size: int = 8,
    test_fraction: float = 0.2,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    seed: int = 0,
) -> DataSplits:
    """Digits (scikit-learn load_digits, UCI optdigits), 10 classes of 1x8x8 images, upsampled to size x size when asked.

    labelled / unlabelled: as for fashion_mnist (a stratified labelled subset, the rest -1 or dropped).
    """
    from sklearn.datasets import load_digits

    if size < 1:
        raise TransfuseError(f"digits size must be a positive number of pixels; got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise TransfuseError(f"digits needs 0 < test_fraction < 1 (it has no test split of its own); got {test_fraction}")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)  # (N, 1, size, size)
    labels = torch.from_numpy(bunch.target).long()
    gen = _generator(seed)
    train_pos, test_pos = stratified_split(labels, test_fraction, gen)
    mean, std = images[train_pos].mean(), images[train_pos].std()
    full = IndexedTensors((images - mean) / std, labels)
    train = apply_labelled(full.subset(train_pos), labelled, unlabelled, gen)
    extra = (
        f"digits x/16, bilinear to {size}x{size}, (x-{mean.item():.6f})/{std.item():.6f}; "
        f"test_fraction={test_fraction} labelled={labelled} unlabelled={unlabelled} seed={seed}"
    )
    return DataSplits(
        name="digits",
        train=train,
        test=full.subset(test_pos),
        num_classes=10,
        in_shape=(1, size, size),
        fingerprint=fingerprint_tensors(train.inputs, train.labels, train.index, extra=extra),
        class_names=[str(d) for d in range(10)],
    )
