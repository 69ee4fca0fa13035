"""Element-wise maximum of the weighted probabilities, renormalised."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from . import FusionRule, rules
from ._math import broadcast_weights, probability_weights


@rules.register("max")
class ProbabilityMax(FusionRule):
    """p(v) ∝ max_k w_k p_k(v): each token keeps its most confident model's vote (max pooling)."""

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        log_w = torch.log(broadcast_weights(probability_weights(weights), logprobs))  # (K, 1, 1)
        best = (logprobs.float() + log_w).amax(dim=0)  # (B, V)
        return torch.log_softmax(best, dim=-1)
