"""What flows between data, models and objectives.

``Outputs`` is what a model (student or teacher) produced for a batch; ``Batch`` is what the
data gave. Teacher signals are dense logits, or sparse top-k log-probabilities from a cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from torch import Tensor


@dataclass
class Outputs:
    """A model's outputs for one batch.

    logits: (B, C) for classifiers, (B, T, V) for language models.
    hidden: named intermediate features taken through forward hooks, e.g. {"layer3": (B, D, H, W)}.
    topk_logprobs / topk_indices: (B, [T,] K) sparse teacher signal from a cache (logits may be None).
    """

    logits: Optional[Tensor] = None
    hidden: Dict[str, Tensor] = field(default_factory=dict)
    topk_logprobs: Optional[Tensor] = None
    topk_indices: Optional[Tensor] = None

    def detach(self) -> "Outputs":
        return Outputs(
            logits=None if self.logits is None else self.logits.detach(),
            hidden={k: v.detach() for k, v in self.hidden.items()},
            topk_logprobs=self.topk_logprobs,
            topk_indices=self.topk_indices,
        )


@dataclass
class Batch:
    """One batch from the data.

    inputs: (B, ...) model inputs (images (B, C, H, W), token ids (B, T)).
    labels: (B,) class ids, -1 where a sample has no label; (B, T) token targets, -100 ignored.
    index: (B,) sample ids in the data set (keys of the teacher cache).
    mask: (B, T) 1 on tokens that count (language models), else None. When no mask is given
        and token labels (B, T) hold -100 (Hugging Face's "ignore"), the mask is read from them
        (labels != -100), so ignored tokens never count as tokens (TRL's convention).
    extra: anything else a data set provides (attention_mask, ...).
    """

    inputs: Tensor
    labels: Optional[Tensor] = None
    index: Optional[Tensor] = None
    mask: Optional[Tensor] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = self.labels
        if self.mask is None and isinstance(labels, Tensor) and labels.dim() >= 2 and not labels.is_floating_point():
            ignored = labels == -100  # (B, T)
            if bool(ignored.any()):
                self.mask = ~ignored

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        def move(t: Any) -> Any:
            return t.to(device) if isinstance(t, Tensor) else t

        return Batch(
            inputs=move(self.inputs),
            labels=move(self.labels),
            index=move(self.index),
            mask=move(self.mask),
            extra={k: move(v) for k, v in self.extra.items()},
        )


def as_outputs(raw: Any) -> Outputs:
    """Wrap what a model returned (a tensor, a Hugging Face ModelOutput, a dict) as Outputs."""
    if isinstance(raw, Outputs):
        return raw
    if isinstance(raw, Tensor):
        return Outputs(logits=raw)
    logits = getattr(raw, "logits", None)
    if logits is None and isinstance(raw, dict):
        logits = raw.get("logits")
    if logits is None:
        raise TypeError(f"cannot find logits in model output of type {type(raw).__name__}")
    return Outputs(logits=logits)


def as_batch(raw: Any) -> Batch:
    """Wrap a DataLoader item ((x, y), (x, y, index), dict or Batch) as a Batch."""
    if isinstance(raw, Batch):
        return raw
    if isinstance(raw, dict):
        known = {"inputs", "labels", "index", "mask"}
        return Batch(
            inputs=raw["inputs"],
            labels=raw.get("labels"),
            index=raw.get("index"),
            mask=raw.get("mask"),
            extra={k: v for k, v in raw.items() if k not in known},
        )
    if isinstance(raw, (list, tuple)):
        if len(raw) == 2:
            return Batch(inputs=raw[0], labels=raw[1])
        if len(raw) == 3:
            return Batch(inputs=raw[0], labels=raw[1], index=raw[2])
    if isinstance(raw, Tensor):
        return Batch(inputs=raw)
    raise TypeError(
        f"a DataLoader item must be (inputs, labels), (inputs, labels, index), a dict or a Batch; got {type(raw).__name__}"
    )
