"""Reverse KL: the student's distribution against the teacher's (mode seeking)."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import kl_from_logprobs, masked_mean, pair_logprobs, position_mask


@objectives.register("reverse_kl")
class ReverseKL(Objective):
    """T^2 KL(p_s^T || p_t^T), mode-seeking (survey of LLM KD, Xu et al. 2024; MiniLLM)."""

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("reverse_kl temperature must be > 0")
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = pair_logprobs(student, teacher, self.temperature)  # dense (..., V) or top-k buckets (..., K+1)
        per_position = kl_from_logprobs(s, t)  # (B,) or (B, T)
        return masked_mean(per_position, position_mask(batch.mask, per_position)) * self.temperature**2
