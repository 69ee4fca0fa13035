"""PGD adversarial training (Madry et al. 2018): the student's cross-entropy on PGD-k examples it makes against itself."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._adversarial import AttackBudget
from ._functional import cross_entropy


@objectives.register("adv_train")
class AdversarialTraining(Objective):
    """Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks: min over weights of
    CE(student(x_adv), y), x_adv = PGD-``steps`` (random start, step 2.5 eps / steps) inside the L-inf ball of x.

    No teacher: this trains the adversarially robust teacher that ``mtard`` needs. ``eps`` is a
    fraction of the input range (the distill recipe passes the training inputs' min..max, so 0.1 on
    Fashion-MNIST is 25.5/255 in pixels, and attacks clip to that range). ``clean_weight`` > 0 adds
    that share of the clean CE (the batch then holds x and x_adv, 2B rows; 0 is Madry's pure min-max).
    """

    needs_teacher = False
    changes_inputs = True  # prepare() swaps in adversarial inputs

    def __init__(self, *, eps: float = 0.1, steps: int = 10, step_size: Optional[float] = None, clean_weight: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= clean_weight <= 1.0:
            raise ValueError(f"adv_train clean_weight must be in [0, 1]; got {clean_weight}")
        self.budget = AttackBudget(eps=eps, steps=steps, step_size=step_size, what="adv_train")
        self.clean_weight = clean_weight
        self._student: list = []

    def set_input_range(self, bounds: Tuple[float, float]) -> None:
        self.budget.set_input_range(bounds)

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        self._student = [student]

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        if not self._student:
            raise ValueError("adv_train attacks the student: call objective.bind(student) first")
        x_adv = self.budget.attack(self._student[0], batch.inputs, batch.labels, generator)  # (B, ...)
        if self.clean_weight == 0.0:
            return Batch(inputs=x_adv, labels=batch.labels, index=batch.index, mask=None, extra=dict(batch.extra))
        double = lambda v: None if v is None else torch.cat([v, v], 0)  # noqa: E731
        return Batch(inputs=torch.cat([batch.inputs, x_adv], 0), labels=double(batch.labels), index=double(batch.index),
                     mask=None, extra=dict(batch.extra))

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if batch.labels is None:
            raise ValueError("adv_train is supervised: it needs labelled samples")
        logits = student.logits  # (B, C), or (2B, C) = clean rows then adversarial rows
        if self.clean_weight == 0.0:
            return cross_entropy(logits, batch.labels)
        half = len(logits) // 2
        clean = cross_entropy(logits[:half], batch.labels[:half])
        adv = cross_entropy(logits[half:], batch.labels[half:])
        return self.clean_weight * clean + (1 - self.clean_weight) * adv
