"""A weighted sum of other objectives, with fixed weights or per-step MGDA weights."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

import torch
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, build_objective, objectives
from ._mgda import loss_min_norm_weights


@objectives.register("combined")
class Combined(Objective):
    """sum_i w_i L_i over other registered objectives, e.g. terms=[{name: kd, weight: 1}, {name: jsd, weight: 0.5}].

    ``weighting: mgda`` replaces the fixed weights at every step by the multiple-gradient-descent
    weights (Désidéri 2012; Sener & Koltun 2018, as ParetoGNN weights its tasks): the point of the
    simplex whose mix of the terms' gradients over the student's parameters has the smallest norm.
    It costs one extra backward pass per term; the terms' ``weight`` values are then ignored.
    The last weights are kept in the buffer ``mgda_weights`` (logged and checkpointed).
    """

    def __init__(self, *, terms: List[Dict[str, Any]], weighting: Literal["fixed", "mgda"] = "fixed") -> None:
        super().__init__()
        if weighting not in ("fixed", "mgda"):
            raise ValueError(f"combined weighting must be 'fixed' or 'mgda', not {weighting!r}")
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
        self.weighting = weighting
        self.register_buffer("mgda_weights", torch.tensor(weights) / max(sum(weights), 1e-12))
        self._params: List[nn.Parameter] = []

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        self._params = [p for p in student.parameters() if p.requires_grad]
        for term in self.terms:
            term.bind(student, teacher=teacher)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        losses = [term(student, teacher, batch) for term in self.terms]
        if self.weighting == "fixed":
            return sum(w * loss for w, loss in zip(self.weights, losses))
        return sum(w * loss for w, loss in zip(self._mgda(losses), losses))

    def _mgda(self, losses: List[Tensor]) -> Tensor:
        if not self._params:
            raise RuntimeError("combined with weighting=mgda needs bind(student) before the first step")
        if not torch.is_grad_enabled() or not any(loss.requires_grad for loss in losses):
            return self.mgda_weights  # evaluation: keep the last training step's weights
        w = loss_min_norm_weights(losses, self._params)  # (terms,)
        self.mgda_weights.copy_(w)
        return w.to(losses[0].device)

    def on_step_end(self, *, step: int, total_steps: int, loss: float) -> None:
        for term in self.terms:
            term.on_step_end(step=step, total_steps=total_steps, loss=loss)

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        for term in self.terms:
            term.on_epoch_end(epoch=epoch, epochs=epochs)
