"""A weighted sum of other objectives."""
from __future__ import annotations

from typing import Any, Dict, List

from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, build_objective, objectives


@objectives.register("combined")
class Combined(Objective):
    """sum_i w_i L_i over other registered objectives, e.g. terms=[{name: kd, weight: 1}, {name: jsd, weight: 0.5}]."""

    def __init__(self, *, terms: List[Dict[str, Any]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("combined needs at least one term: terms=[{name: kd, weight: 1.0}]")
        built, weights = [], []
        for term in terms:
            unknown = set(term) - {"name", "weight", "params"}
            if "name" not in term or unknown:
                raise ValueError("each combined term is {name: ..., weight: ..., params: {...}}")
            built.append(build_objective(term["name"], term.get("params")))
            weights.append(float(term.get("weight", 1.0)))
        self.terms = nn.ModuleList(built)
        self.weights = weights
        self.needs_teacher = any(t.needs_teacher for t in built)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return sum(w * term(student, teacher, batch) for w, term in zip(self.weights, self.terms))

    def on_step_end(self, *, step: int, total_steps: int, loss: float) -> None:
        for term in self.terms:
            term.on_step_end(step=step, total_steps=total_steps, loss=loss)

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        for term in self.terms:
            term.on_epoch_end(epoch=epoch, epochs=epochs)
