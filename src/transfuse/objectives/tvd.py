"""Total variation distance over tokens."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import masked_mean, pair_logprobs, position_mask


@objectives.register("tvd")
class TotalVariation(Objective):
    """0.5 sum_v |p_t(v) - p_s(v)| per token, masked mean (survey of LLM KD; DistiLLM/TAID `tvd`).

    Bounded in [0, 1]; no T^2 factor. Accepts a dense or a sparse top-k teacher.
    """

    is_divergence = True
    supports_tokens = True

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("tvd temperature must be > 0")
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = pair_logprobs(student, teacher, self.temperature)  # (B, [T,] V or K+1)
        per_position = 0.5 * (t.exp() - s.exp()).abs().sum(-1)  # (B,) or (B, T)
        return masked_mean(per_position, position_mask(batch.mask, per_position))
