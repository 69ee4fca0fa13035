"""What the adversarial objectives share: a PGD attack budget relative to the inputs' range, and the attack on the student."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..eval.adversarial import attack_budget, pgd_attack
from ..signals import as_outputs


class AttackBudget:
    """eps (and the PGD step size) as a fraction of the input range once the recipe gives the range
    (``set_input_range``), else in input units with no clipping."""

    def __init__(self, *, eps: float, steps: int, step_size: Optional[float], what: str) -> None:
        if eps < 0 or steps < 1:
            raise ValueError(f"{what} needs eps >= 0 and steps >= 1; got eps={eps}, steps={steps}")
        if step_size is not None and step_size <= 0:
            raise ValueError(f"{what} step_size must be > 0 (or unset for 2.5 eps / steps)")
        self.eps, self.steps, self.step_size = eps, steps, step_size
        self.bounds: Optional[Tuple[float, float]] = None

    def set_input_range(self, bounds: Tuple[float, float]) -> None:
        self.bounds = (float(bounds[0]), float(bounds[1]))

    def attack(self, model: nn.Module, inputs: Tensor, labels: Optional[Tensor], generator: torch.Generator) -> Tensor:
        """PGD-k examples (B, ...) against ``model`` in eval mode (as MTARD's and Madry's code attack);
        unlabelled samples (-1) are attacked against the model's own prediction."""
        scale = (lambda v: attack_budget(v, self.bounds)) if self.bounds is not None else (lambda v: v)  # noqa: E731
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                guess = as_outputs(model(inputs)).logits.argmax(-1)  # (B,)
            target = guess if labels is None else torch.where(labels >= 0, labels, guess)
            with torch.enable_grad():
                return pgd_attack(model, inputs, target, eps=scale(self.eps), steps=self.steps,
                                  step_size=None if self.step_size is None else scale(self.step_size),
                                  bounds=self.bounds, generator=generator)
        finally:
            model.train(was_training)
