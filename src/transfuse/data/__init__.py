"""Data sets: a registry of factories returning :class:`DataSplits`, one file per data set.

Every training sample carries its index in the data set, the key of the teacher cache.
Items are batched by tensor indexing (``__getitems__``), not one sample at a time, so the
loader adds almost nothing to a training step.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..registry import Registry

datasets: Registry = Registry("dataset", "transfuse.data")


class IndexedTensors(Dataset):
    """In-memory tensors with their sample ids; a batch is {"inputs", "labels", "index"}.

    inputs: (N, ...) float; labels: (N,) int64, -1 where a sample has no label;
    index: (N,) int64 sample ids (positions in the full data set, stable across subsets).
    """

    def __init__(self, inputs: Tensor, labels: Tensor, index: Optional[Tensor] = None) -> None:
        if len(inputs) != len(labels):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        self.inputs = inputs
        self.labels = labels.long()
        self.index = torch.arange(len(inputs)) if index is None else index.long()
        # ids equal to positions (a whole data set, not a subset): a batch's ids are its positions
        self._ids_are_positions = index is None or bool(torch.equal(self.index, torch.arange(len(inputs))))

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> Dict[str, Tensor]:
        return {"inputs": self.inputs[i], "labels": self.labels[i], "index": self.index[i]}

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, Tensor]:
        # index_select copies whole rows; advanced indexing (inputs[idx]) goes through the generic
        # gather kernel, about 3x slower for a batch of 128 images on one CPU thread. Same values.
        idx = torch.as_tensor(indices, dtype=torch.long)
        ids = idx if self._ids_are_positions else self.index.index_select(0, idx)  # (B,), read only
        return {"inputs": self.inputs.index_select(0, idx), "labels": self.labels.index_select(0, idx), "index": ids}

    def subset(self, positions: Tensor) -> "IndexedTensors":
        return IndexedTensors(self.inputs[positions], self.labels[positions], self.index[positions])

    def with_labels(self, labels: Tensor) -> "IndexedTensors":
        """The same samples with other labels (N,)."""
        return IndexedTensors(self.inputs, labels, self.index)


def collate_batch(items):
    """Collate for loaders over IndexedTensors: ``__getitems__`` already built the batch."""
    if isinstance(items, dict):
        return items
    return torch.utils.data.default_collate(items)


@dataclass
class DataSplits:
    """What a data set factory returns.

    train/test: IndexedTensors (test may be None); num_classes: C; in_shape: one input's shape,
    e.g. (1, 28, 28); fingerprint: hash of the training inputs, labels and transform, used to
    key the teacher cache. input_stats: the standardisation already applied, when the data set did one.
    """

    name: str
    train: IndexedTensors
    test: Optional[IndexedTensors]
    num_classes: int
    in_shape: Tuple[int, ...]
    fingerprint: str
    class_names: Optional[List[str]] = None
    # the standardisation applied to the inputs ({"mean", "std"} shaped to broadcast against a batch,
    # from the training split only), saved with a run so prediction on raw inputs applies the same
    input_stats: Optional[Dict[str, Tensor]] = None


def fingerprint_tensors(*tensors: Tensor, extra: str = "") -> str:
    """sha256 over tensors' dtype, shape and bytes, plus a description (the transform)."""
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        t = t.contiguous().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def build_data(name: str, params: dict | None = None) -> DataSplits:
    from ..registry import build

    return build(datasets, name, params)


__all__ = ["DataSplits", "IndexedTensors", "collate_batch", "datasets", "build_data", "fingerprint_tensors"]
