"""BD-KD: Balancing the Divergences for Online Knowledge Distillation (Amara et al., 2022/2024, arXiv 2212.12965).

Online KD between a larger "teacher" network (the first student listed) and compact students
trained with it. What was followed: the abstract and the paper's summary (no official code was
found by search): the compact student's distillation term is a *sample-wise* mix of the forward
KL(p_t || p_s) and the reverse KL(p_s || p_t), balanced by the entropy gap of the two
predictions, and the teacher's loss takes the reverse divergence (from its own side) as a
regulariser. The exact weights are not in the abstract; this implementation uses, per sample,
with entropies H at the distillation temperature and detached::

    w_r = H(p_s) / (H(p_s) + H(p_t)),   w_f = 1 - w_r     (w_r - w_f = entropy gap / total entropy)
    L_s = CE(y, p_s) + kl_weight T^2 mean_b[ w_f KL(p_t || p_s) + w_r KL(p_s || p_t) ]
    L_t = CE(y, p_t) + teacher_kl_weight T^2 mean_{students, b} KL(p_t || p_s)

so a student less confident than the teacher (higher entropy) is pulled mostly by the
mode-seeking reverse KL (sharpen), a more confident one mostly by the mass-covering forward KL
(soften); at equal entropies it is the symmetric mean. Peers are detached, as in DML.
``weighting: mgda`` replaces each model's fixed CE / KL weights by per-step MGDA weights over its
own parameters (as ``combined``).
"""
from __future__ import annotations

from typing import List, Literal

from torch import Tensor

from ...objectives import Objective
from ...objectives._functional import kl_from_logprobs, log_softmax
from ...signals import Batch, Outputs
from . import OnlineMethod, methods
from ._terms import TermsObjective, check_weighting, with_labels


def entropy(logp: Tensor) -> Tensor:
    """Shannon entropy (nats) per position from log-probabilities: (..., C) -> (...)."""
    return -(logp.exp() * logp).sum(-1)


def balance_weights(student_logp: Tensor, teacher_logp: Tensor) -> tuple[Tensor, Tensor]:
    """(w_forward, w_reverse) per sample from the entropy gap, detached: (B, C), (B, C) -> (B,), (B,)."""
    h_s, h_t = entropy(student_logp.detach()), entropy(teacher_logp.detach())  # (B,)
    w_r = h_s / (h_s + h_t).clamp_min(1e-12)
    return 1.0 - w_r, w_r


def balanced_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """mean_b[ w_f KL(p_t || p_s) + w_r KL(p_s || p_t) ], the teacher detached; (B, C), (B, C) -> scalar."""
    s = log_softmax(student_logits, temperature)  # (B, C)
    t = log_softmax(teacher_logits.detach(), temperature)  # (B, C)
    w_f, w_r = balance_weights(s, t)  # (B,)
    return (w_f * kl_from_logprobs(t, s) + w_r * kl_from_logprobs(s, t)).mean()


class BalancedStudentObjective(TermsObjective):
    """A compact student: CE + kl_weight T^2 * entropy-balanced forward/reverse KL to the teacher (peer 0)."""

    def __init__(self, *, temperature: float, kl_weight: float, weighting: str = "fixed") -> None:
        super().__init__([1.0, kl_weight], weighting)
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        kl = self.temperature**2 * balanced_kl(student.logits, teacher.logits[0], self.temperature)
        return with_labels(self, student, batch, kl)


class TeacherObjective(TermsObjective):
    """The online teacher: CE + teacher_kl_weight T^2 * mean over students of KL(p_t || p_s) (its reverse KL)."""

    def __init__(self, *, temperature: float, kl_weight: float, weighting: str = "fixed") -> None:
        super().__init__([1.0, kl_weight], weighting)
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        own = log_softmax(student.logits, self.temperature).unsqueeze(0)  # (1, B, C): the teacher network itself
        others = log_softmax(teacher.logits.detach(), self.temperature)  # (P, B, C): the compact students
        kl = self.temperature**2 * kl_from_logprobs(own, others).mean()
        return with_labels(self, student, batch, kl)


@methods.register("bdkd")
class BDKD(OnlineMethod):
    """BD-KD (Amara et al.): online KD, students' forward/reverse KL balanced per sample by the entropy gap; first student = teacher."""

    def __init__(self, *, temperature: float = 1.0, kl_weight: float = 1.0, teacher_kl_weight: float = 1.0,
                 weighting: Literal["fixed", "mgda"] = "fixed") -> None:
        if temperature <= 0:
            raise ValueError("bdkd temperature must be > 0")
        check_weighting("bdkd", weighting)
        self.temperature, self.kl_weight, self.teacher_kl_weight = temperature, kl_weight, teacher_kl_weight
        self.weighting = weighting

    def objectives(self, n_students: int) -> List[Objective]:
        teacher = TeacherObjective(temperature=self.temperature, kl_weight=self.teacher_kl_weight, weighting=self.weighting)
        return [teacher] + [BalancedStudentObjective(temperature=self.temperature, kl_weight=self.kl_weight, weighting=self.weighting)
                            for _ in range(n_students - 1)]
