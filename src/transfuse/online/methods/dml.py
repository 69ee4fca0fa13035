"""DML: Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018).

Followed from the paper (Eq. 10 / Algorithm 1): every student i minimises
``CE(y, p_i) + 1/(K-1) sum_{j != i} KL(p_j || p_i)``, the peers' predictions p_j taken as fixed
targets (detached), all students updated at every step from the same mini-batch (the paper
updates them in turn with fresh predictions; here they step together on one forward each,
as most implementations do, e.g. KD_Lib's DML). The paper uses T = 1; ``temperature`` softens
both sides, with the usual T^2 factor on the KL. ``weighting: mgda`` replaces the fixed CE / KL
weights of each student by per-step MGDA weights over its own parameters (as ``combined``); it
stalls in practice (docs/benchmarks/online.md: two untrained students agree, the mutual KL's
near-zero gradient takes almost all the weight), so ``fixed`` is the default.
"""
from __future__ import annotations

from typing import List, Literal

from torch import Tensor

from ...objectives import Objective
from ...objectives._functional import kl_from_logprobs, log_softmax
from ...signals import Batch, Outputs
from . import OnlineMethod, methods
from ._terms import TermsObjective, check_weighting, with_labels


def mutual_kl(own_logits: Tensor, peer_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """mean over peers and samples of KL(p_peer || p_own) at ``temperature``; (B, C), (P, B, C) -> scalar."""
    own = log_softmax(own_logits, temperature)  # (B, C)
    peers = log_softmax(peer_logits, temperature)  # (P, B, C)
    return kl_from_logprobs(peers, own.unsqueeze(0)).mean()  # (P, B) -> ()


class MutualObjective(TermsObjective):
    """ce_weight * CE(y) + kl_weight * T^2 * mean_j KL(p_j || p_self) over the peers j (or MGDA weights on the two)."""

    def __init__(self, *, temperature: float, kl_weight: float, ce_weight: float, weighting: str = "fixed") -> None:
        super().__init__([ce_weight, kl_weight], weighting)
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        kl = self.temperature**2 * mutual_kl(student.logits, teacher.logits, self.temperature)
        return with_labels(self, student, batch, kl)


@methods.register("dml")
class DML(OnlineMethod):
    """Deep Mutual Learning (Zhang et al. 2018): each student CE + KL(p_other || p_self), the others detached."""

    def __init__(self, *, temperature: float = 1.0, kl_weight: float = 1.0, ce_weight: float = 1.0,
                 weighting: Literal["fixed", "mgda"] = "fixed") -> None:
        if temperature <= 0:
            raise ValueError("dml temperature must be > 0")
        check_weighting("dml", weighting)
        self.temperature, self.kl_weight, self.ce_weight, self.weighting = temperature, kl_weight, ce_weight, weighting

    def objectives(self, n_students: int) -> List[Objective]:
        return [MutualObjective(temperature=self.temperature, kl_weight=self.kl_weight, ce_weight=self.ce_weight,
                                weighting=self.weighting) for _ in range(n_students)]
