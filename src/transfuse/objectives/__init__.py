"""Distillation objectives: ``forward(student, teacher, batch) -> scalar``, one file per objective.

An objective returns the mean of its loss over the units that count in the batch (samples,
or tokens where ``batch.mask`` is set); the loop re-weights micro-batches so that gradient
accumulation and several processes give the gradient of one big batch. State an objective
keeps (TAID's t, PS-KD's buffer) lives in buffers so that checkpoints carry it.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..registry import Registry
from ..signals import Batch, Outputs

objectives: Registry = Registry("objective", "transfuse.objectives")


class Objective(nn.Module):
    """Interface every objective follows; the hooks are optional and do nothing by default."""

    #: False for objectives that use no teacher (``ce``): the loop then skips the teacher.
    needs_teacher: bool = True
    #: True for pure divergences: zero when the student's outputs equal the teacher's (contract test).
    is_divergence: bool = False
    #: True when the objective accepts token-shaped logits (B, T, V) with ``batch.mask``.
    supports_tokens: bool = False
    #: Module paths whose outputs the loop captures into ``Outputs.hidden`` by forward hooks
    #: (see ``_features.forward_with_features``); ``"penultimate"`` is the input of the last Linear.
    student_features: tuple = ()
    teacher_features: tuple = ()
    #: True when the teacher may know only some of the student's classes (its first ones; Cr-KD).
    teacher_may_have_fewer_classes: bool = False

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        """Called once before training with the (unwrapped) student, e.g. to keep a frozen copy.

        ``teacher`` (the teacher model, when live) is for objectives that backpropagate through
        it to their own parts (HARD's augmentor, the data-free generator).
        """

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        """Called before both forwards; may return a changed batch that student and teacher both see
        (MixKD's mixup). ``generator`` is seeded by (seed, step), so resumed runs repeat it."""
        return batch

    def on_step_end(self, *, step: int, total_steps: int, loss: float) -> None:
        """Called after each optimizer step (TAID updates t here)."""

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        """Called after each epoch (PS-KD rolls its buffer here)."""


def build_objective(name: str, params: dict | None = None) -> Objective:
    """An objective from its registered name (or dotted path) and keyword parameters."""
    from ..registry import build

    return build(objectives, name, params)


__all__ = ["Objective", "objectives", "build_objective"]
