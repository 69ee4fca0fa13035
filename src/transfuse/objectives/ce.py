"""Cross-entropy on the labels alone: the no-teacher baseline."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import cross_entropy


@objectives.register("ce")
class CrossEntropy(Objective):
    """Cross-entropy with the labels; no teacher (the baseline every transfer is measured against)."""

    needs_teacher = False

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return cross_entropy(student.logits, batch.labels, self.label_smoothing)
