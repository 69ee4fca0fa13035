"""Generalized Jensen-Shannon divergence."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import generalized_jsd, masked_mean, pair_logprobs, position_mask


@objectives.register("jsd")
class GeneralizedJSD(Objective):
    """beta KL(p_t||m) + (1-beta) KL(p_s||m), m = beta p_t + (1-beta) p_s (GKD, Agarwal et al. 2024).

    As in TRL's GKD the logits are divided by the temperature with no T^2 factor.
    """

    def __init__(self, *, beta: float = 0.5, temperature: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < beta < 1.0:
            raise ValueError("jsd beta must be strictly between 0 and 1")
        self.beta = beta
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = pair_logprobs(student, teacher, self.temperature)  # dense (..., V) or top-k buckets (..., K+1)
        per_position = generalized_jsd(s, t, self.beta)  # log-probs are their own log_softmax
        return masked_mean(per_position, position_mask(batch.mask, per_position))
