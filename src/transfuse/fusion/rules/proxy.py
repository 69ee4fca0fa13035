"""Proxy tuning: steer a large base with a small tuned expert and its untuned anti-expert."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ...errors import TransfuseError
from . import FusionRule, rules
from ._math import log_linear


@rules.register("proxy")
class ProxyTuning(FusionRule):
    """Liu et al. 2024, Tuning Language Models by Proxy: z_base + alpha (z_expert - z_anti).

    Models in the order (base, expert, anti-expert), as alisawuffles/proxy-tuning's ``DExpertsLlama``.
    The model weights are not used: ``alpha`` sets the strength of the steer.
    """

    identity_for_one = False
    uses_weights = False
    models = "3: base, expert, anti-expert"

    def __init__(self, *, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        if logprobs.shape[0] != 3:
            raise TransfuseError(
                f"the proxy rule takes 3 models (base, expert, anti-expert), got {logprobs.shape[0]}; list them in that order"
            )
        return log_linear(logprobs, torch.tensor([1.0, self.alpha, -self.alpha]))  # (3, B, V) -> (B, V)
