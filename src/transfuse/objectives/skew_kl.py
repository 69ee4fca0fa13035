"""Skew KL (DistiLLM): KL to a mixture of teacher and student."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import kl_from_logprobs, masked_mean, pair_logprobs, position_mask


@objectives.register("skew_kl")
class SkewKL(Objective):
    """DistiLLM (Ko et al. 2024) skew KL, as in its code (distillm/losses.py) and TAID's skew_fkl/skew_rkl.

    Forward: KL(p_t || alpha p_t + (1 - alpha) p_s). Reverse (``reverse=True``):
    KL(p_s || alpha p_s + (1 - alpha) p_t). alpha = 0 gives plain forward / reverse KL.
    The mixture is formed in probability space (logsumexp of log-probabilities, float32).
    """

    is_divergence = True
    supports_tokens = True

    def __init__(self, *, alpha: float = 0.1, reverse: bool = False, temperature: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= alpha < 1.0:
            raise ValueError("skew_kl alpha must be in [0, 1)")
        if temperature <= 0:
            raise ValueError("skew_kl temperature must be > 0")
        self.alpha = alpha
        self.reverse = reverse
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = pair_logprobs(student, teacher, self.temperature)  # (B, [T,] V or K+1)
        target, other = (s, t) if self.reverse else (t, s)
        if self.alpha == 0.0:
            mix = other
        else:
            mix = torch.logaddexp(target + math.log(self.alpha), other + math.log(1.0 - self.alpha))
        per_position = kl_from_logprobs(target, mix)  # (B,) or (B, T)
        return masked_mean(per_position, position_mask(batch.mask, per_position)) * self.temperature**2
