"""Forward KL over tokens: the teacher's distribution against the student's (mean seeking)."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import kl_from_logprobs, masked_mean, pair_logprobs, position_mask


@objectives.register("forward_kl")
class ForwardKL(Objective):
    """T^2 KL(p_t^T || p_s^T) per token, masked mean (survey of LLM KD, Xu et al. 2024; DistiLLM/TAID `fkl`).

    Accepts a dense teacher (logits) or a sparse top-k teacher (see ``pair_logprobs``).
    """

    is_divergence = True
    supports_tokens = True

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("forward_kl temperature must be > 0")
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = pair_logprobs(student, teacher, self.temperature)  # (B, [T,] V or K+1)
        per_position = kl_from_logprobs(t, s)  # (B,) or (B, T)
        return masked_mean(per_position, position_mask(batch.mask, per_position)) * self.temperature**2
