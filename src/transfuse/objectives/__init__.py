"""Distillation objectives: ``forward(student, teacher, batch) -> scalar``, one file per objective.

An objective returns the mean of its loss over the units that count in the batch (samples,
or tokens where ``batch.mask`` is set); the loop re-weights micro-batches so that gradient
accumulation and several processes give the gradient of one big batch. State an objective
keeps (TAID's t, PS-KD's buffer) lives in buffers so that checkpoints carry it.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..registry import Registry
from ..signals import Batch, Outputs

objectives: Registry = Registry("objective", "transfuse.objectives")


class Objective(nn.Module):
    """Interface every objective follows; the hooks are optional and do nothing by default."""

    #: False for objectives that use no teacher (``ce``): the loop then skips the teacher.
    needs_teacher: bool = True

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def on_step_end(self, *, step: int, total_steps: int, loss: float) -> None:
        """Called after each optimizer step (TAID updates t here)."""

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        """Called after each epoch (PS-KD rolls its buffer here)."""


def build_objective(name: str, params: dict | None = None) -> Objective:
    """An objective from its registered name (or dotted path) and keyword parameters."""
    from ..registry import build

    return build(objectives, name, params)


__all__ = ["Objective", "objectives", "build_objective"]
