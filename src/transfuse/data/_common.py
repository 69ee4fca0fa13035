"""Helpers shared by the data set factories: seeded stratified subsets, label checks, normalising."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import TransfuseError
from . import IndexedTensors


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def stratified_positions(labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Sorted positions of a random subset of ``n`` samples with each class in proportion.

    labels: (N,) int64 >= 0. Each class gets floor(n * count / N) samples; the samples left over go
    to the classes with the largest remainders (ties: smaller class id), so ``n`` is exact.
    """
    total = len(labels)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / total  # (K,)
    quota = exact.floor().long()
    short = n - int(quota.sum())
    if short > 0:
        order = sorted(range(len(classes)), key=lambda k: (-(exact[k] - quota[k]).item(), k))
        for k in order[:short]:
            quota[k] += 1
    chosen = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == c).flatten()  # (count_c,)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:q]])
    return torch.cat(chosen).sort().values


def stratified_split(labels: Tensor, test_fraction: float, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """(train positions, test positions), sorted; the test part holds ``test_fraction`` of each class."""
    if not 0.0 <= test_fraction < 1.0:
        raise TransfuseError(f"test_fraction must be in [0, 1); got {test_fraction}")
    n_test = int(round(len(labels) * test_fraction))
    test = stratified_positions(labels, n_test, generator) if n_test else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[test] = False
    return torch.nonzero(keep).flatten(), test


def first_n(split: IndexedTensors, n: Optional[int], what: str) -> IndexedTensors:
    """The first ``n`` samples (all when None); ``what`` names the parameter in errors."""
    if n is None:
        return split
    if n <= 0:
        raise TransfuseError(f"{what} must be a positive number of samples; got {n}")
    return split.subset(torch.arange(min(int(n), len(split))))


def apply_labelled(
    train: IndexedTensors, labelled: Optional[int], unlabelled: bool, generator: torch.Generator
) -> IndexedTensors:
    """Keep labels for a class-stratified random subset of ``labelled`` samples, -1 for the rest.

    With ``unlabelled=False`` the split keeps only the labelled samples (their ids unchanged).
    """
    if labelled is None:
        return train
    if not 0 < labelled <= len(train):
        raise TransfuseError(
            f"labelled must be between 1 and the {len(train)} training samples; got {labelled}"
        )
    keep = stratified_positions(train.labels, int(labelled), generator)  # (labelled,)
    if not unlabelled:
        return train.subset(keep)
    labels = torch.full_like(train.labels, -1)
    labels[keep] = train.labels[keep]
    return train.with_labels(labels)


def check_labels(labels: np.ndarray | Tensor, what: str, num_classes: Optional[int] = None) -> Tensor:
    """Labels as int64 (N,), refusing non-integer values and values outside [0, num_classes)."""
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    if t.ndim != 1:
        raise TransfuseError(f"{what} must be one class id per sample (shape (N,)); got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TransfuseError(f"{what} must be integer class ids; got dtype {t.dtype}")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise TransfuseError(f"{what} must be integer class ids; found non-integer values such as {_first_bad(t)}")
    t = t.long()
    if len(t) and int(t.min()) < 0:
        raise TransfuseError(f"{what} has the negative class id {int(t.min())}; class ids start at 0")
    if num_classes is not None and len(t) and int(t.max()) >= num_classes:
        raise TransfuseError(
            f"{what} has class id {int(t.max())}, out of range for num_classes={num_classes} (ids 0..{num_classes - 1})"
        )
    return t


def _first_bad(t: Tensor) -> float:
    bad = ~torch.isfinite(t) | (t != t.round())
    return float(t[bad][0])


def channel_stats(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Mean and std per channel of images (N, C, H, W), shaped (1, C, 1, 1); one scalar for other ranks."""
    return feature_stats(x, "per_feature" if x.ndim == 4 else "global")


def feature_stats(x: Tensor, how: str) -> Tuple[Tensor, Tensor]:
    """Mean and std for standardising ``x`` (N, ...), shaped to broadcast against it.

    how: "per_feature" (one pair per column of (N, F), per last-axis feature of (N, T, F), per
    channel of images (N, C, H, W), as scikit-learn's StandardScaler for tables) or "global" (one pair).
    The std is the unbiased one, floored at 1e-6 so a constant column maps to 0.
    """
    if how == "global" or x.ndim not in (2, 3, 4):
        mean, std = x.mean(), x.std()
    else:
        dims = {2: (0,), 3: (0, 1), 4: (0, 2, 3)}[x.ndim]
        mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    return mean, std.clamp_min(1e-6)


def describe_stats(mean: Tensor, std: Tensor) -> str:
    return f"mean={[round(v, 6) for v in mean.flatten().tolist()]} std={[round(v, 6) for v in std.flatten().tolist()]}"
