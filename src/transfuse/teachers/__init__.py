"""Teacher sources: where the teacher's signal for a batch comes from.

A teacher source is called with a :class:`Batch` and returns :class:`Outputs`. Sources: a
frozen live model (inference mode), an offline cache of its outputs keyed by sample id
(``transfuse.cache``), the student's own past (``SelfTeacher``: snapshot or EMA), and an
ensemble of sources fused by a fusion rule (``EnsembleTeacher``).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import nn

from ..signals import Batch, Outputs


class TeacherSource(Protocol):
    def __call__(self, batch: Batch) -> Outputs: ...


def teacher_inputs(batch: Batch) -> tuple:
    """(inputs, keyword arguments) for the teacher: its own token ids and mask when a text batch has
    them (``teacher_inputs``, ``teacher_attention_mask``), else the batch's inputs and attention_mask."""
    extra = batch.extra
    if "teacher_inputs" in extra:
        return extra["teacher_inputs"], {"attention_mask": extra["teacher_attention_mask"]}
    if "attention_mask" in extra:
        return batch.inputs, {"attention_mask": extra["attention_mask"]}
    return batch.inputs, {}


def frozen_forward(model: nn.Module, batch: Batch, features: Sequence[str] = ()) -> Outputs:
    """A frozen model's logits (B, C) (and the ``features`` module outputs, by forward hooks)."""
    from ..objectives._features import forward_with_features

    inputs, kwargs = teacher_inputs(batch)
    with torch.inference_mode():
        out = forward_with_features(model, inputs, features, **kwargs)
    # Inference tensors cannot join autograd graphs; clones made outside inference mode can.
    return Outputs(logits=out.logits.clone(), hidden={k: v.clone() for k, v in out.hidden.items()})


class FrozenTeacher:
    """A live teacher model, frozen: eval mode, no gradients, run under ``torch.inference_mode``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device | str) -> "FrozenTeacher":
        self.model.to(device)
        return self

    def __call__(self, batch: Batch, features: Sequence[str] = ()) -> Outputs:
        return frozen_forward(self.model, batch, features)


def as_teacher(teacher) -> "TeacherSource | None":
    """A teacher source from what the user passed: None, an nn.Module, or a source already."""
    if teacher is None or callable(teacher) and not isinstance(teacher, nn.Module):
        return teacher
    if isinstance(teacher, nn.Module):
        return FrozenTeacher(teacher)
    raise TypeError(f"teacher must be an nn.Module or a teacher source, got {type(teacher).__name__}")


from .ensemble import EnsembleModel, EnsembleTeacher  # noqa: E402  (defined in its own file)
from .self_teacher import SelfTeacher  # noqa: E402  (defined in its own file)

__all__ = ["TeacherSource", "FrozenTeacher", "SelfTeacher", "EnsembleTeacher", "EnsembleModel", "as_teacher", "teacher_inputs"]
