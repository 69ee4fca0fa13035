"""Teacher sources: where the teacher's signal for a batch comes from.

A teacher source is called with a :class:`Batch` and returns :class:`Outputs`. Sources: a
frozen live model (inference mode), an offline cache of its outputs keyed by sample id.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ..signals import Batch, Outputs, as_outputs


class TeacherSource(Protocol):
    def __call__(self, batch: Batch) -> Outputs: ...


class FrozenTeacher:
    """A live teacher model, frozen: eval mode, no gradients, run under ``torch.inference_mode``."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device | str) -> "FrozenTeacher":
        self.model.to(device)
        return self

    def __call__(self, batch: Batch) -> Outputs:
        with torch.inference_mode():
            out = as_outputs(self.model(batch.inputs))
        # Inference tensors cannot join autograd graphs; a clone outside inference mode can. (B, C)
        return Outputs(logits=out.logits.clone())


def as_teacher(teacher) -> "TeacherSource | None":
    """A teacher source from what the user passed: None, an nn.Module, or a source already."""
    if teacher is None or callable(teacher) and not isinstance(teacher, nn.Module):
        return teacher
    if isinstance(teacher, nn.Module):
        return FrozenTeacher(teacher)
    raise TypeError(f"teacher must be an nn.Module or a teacher source, got {type(teacher).__name__}")


__all__ = ["TeacherSource", "FrozenTeacher", "as_teacher"]
