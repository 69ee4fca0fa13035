"""Product of experts (log-linear pooling) with the weights as exponents."""
from __future__ import annotations

from typing import Any, Dict, Optional

from torch import Tensor

from . import FusionRule, rules
from ._math import log_linear


@rules.register("product")
class ProductOfExperts(FusionRule):
    """p ∝ prod_k p_k^{w_k} (Hinton 2002, product of experts), the weights unnormalised.

    Weights summing to more than 1 sharpen the mix and less than 1 flatten it."""

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        return log_linear(logprobs, weights)  # (K, B, V) -> (B, V)
