"""A student's loss as a sum of terms (CE, a divergence to its peers), with fixed weights or
per-step MGDA weights over that student's own parameters (as ``combined`` with ``weighting: mgda``)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from ...objectives import Objective
from ...objectives._functional import cross_entropy
from ...objectives._mgda import loss_min_norm_weights
from ...signals import Batch, Outputs

WEIGHTINGS = ("fixed", "mgda")


def check_weighting(name: str, weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"{name} weighting must be 'fixed' or 'mgda', not {weighting!r}")


class TermsObjective(Objective):
    """sum_k w_k term_k: ``fixed`` weights, or ``mgda``: the min-norm simplex point of the terms'
    gradients over the bound student's parameters, recomputed each training step (kept in the
    buffer ``mgda_weights``, so it is checkpointed); each student gets its own weights."""

    needs_teacher = False

    def __init__(self, weights: Sequence[float], weighting: str = "fixed") -> None:
        super().__init__()
        self.weights, self.weighting = list(weights), weighting
        self.register_buffer("mgda_weights", torch.full((len(self.weights),), 1.0 / len(self.weights)))
        self._params: List[nn.Parameter] = []

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        self._params = [p for p in student.parameters() if p.requires_grad]

    def combine(self, terms: Sequence[Tensor]) -> Tensor:
        if self.weighting == "fixed":
            return sum(w * t for w, t in zip(self.weights, terms))
        if torch.is_grad_enabled() and self._params and any(t.requires_grad for t in terms):
            self.mgda_weights.copy_(loss_min_norm_weights(terms, self._params))
        return sum(w * t for w, t in zip(self.mgda_weights.to(terms[0].device), terms))


def with_labels(objective: TermsObjective, student: Outputs, batch: Batch, divergence: Tensor) -> Tensor:
    """CE on the labelled samples and ``divergence`` combined by ``objective``'s weighting; a batch
    without labels gives the divergence term alone (fixed: its weight; mgda: all of it, since a
    zero CE gradient would take every MGDA weight and stop learning)."""
    labels = batch.labels
    if labels is None or not bool((labels >= 0).any()):
        return divergence * (objective.weights[1] if objective.weighting == "fixed" else 1.0)
    return objective.combine([cross_entropy(student.logits, labels), divergence])
