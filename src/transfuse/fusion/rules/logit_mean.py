"""Weighted mean of the models' logits (geometric mean of their distributions)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from torch import Tensor

from . import FusionRule, rules
from ._math import log_linear, probability_weights


@rules.register("logit_mean")
class LogitMean(FusionRule):
    """softmax(sum_k w_k z_k) with weights normalised to sum 1; the temperature of the mix stays 1.

    Equal to ``product`` with weights that sum to 1 (log-probs differ from logits by a per-model
    constant, which the softmax removes).
    """

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        return log_linear(logprobs, probability_weights(weights))  # (K, B, V) -> (B, V)
