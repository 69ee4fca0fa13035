"""Hinton knowledge distillation."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import cross_entropy, kl_from_logprobs, masked_mean, pair_logprobs, position_mask


@objectives.register("kd")
class KnowledgeDistillation(Objective):
    """Hinton et al. 2015: alpha T^2 KL(p_t^T || p_s^T) + (1 - alpha) CE(y) on labelled samples.

    Unlabelled samples (label -1) contribute only the KL term. T^2 is always applied (torchdistill's
    KDLoss drops it when there is no CE term), so the gradient scale does not jump with alpha.
    Accepts dense teacher logits or a sparse top-k teacher (``pair_logprobs``).
    """

    def __init__(self, *, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("kd temperature must be > 0")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("kd alpha must be in [0, 1]")
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = pair_logprobs(student, teacher, self.temperature)  # dense (..., C) or top-k buckets (..., K+1)
        per_position = kl_from_logprobs(t, s)  # (B,) or (B, T)
        soft = masked_mean(per_position, position_mask(batch.mask, per_position)) * self.temperature**2
        if self.alpha == 1.0 or batch.labels is None:
            return soft
        return self.alpha * soft + (1 - self.alpha) * cross_entropy(student.logits, batch.labels)
