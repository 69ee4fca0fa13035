"""Probability average of the models (the classic ensemble)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from . import FusionRule, rules
from ._math import broadcast_weights, probability_weights


@rules.register("mean")
class ProbabilityMean(FusionRule):
    """log sum_k w_k p_k with weights normalised to sum 1 (ensembles of teachers, FedDF's average)."""

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        # logprobs (K, B, V), weights (K,)
        log_w = torch.log(broadcast_weights(probability_weights(weights), logprobs))  # (K, 1, 1)
        return torch.logsumexp(logprobs.float() + log_w, dim=0)  # (B, V)
