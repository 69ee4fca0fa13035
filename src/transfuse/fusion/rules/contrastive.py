"""Contrastive decoding: an expert's log-probs minus an amateur's, inside the expert's plausible set."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ...errors import TransfuseError
from . import FusionRule, rules


@rules.register("contrastive")
class ContrastiveDecoding(FusionRule):
    """Li et al. 2023 (Contrastive Decoding): log p_expert - beta log p_amateur on the expert's plausible set.

    Plausible: {v : p_exp(v) >= alpha max p_exp}, -inf elsewhere; models in the order (expert, amateur).

    ``beta`` = 1 is the paper's score; the output is the softmax of the score over the plausible set.
    """

    identity_for_one = False
    uses_weights = False
    models = "2: expert, amateur"

    def __init__(self, *, alpha: float = 0.1, beta: float = 1.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("contrastive alpha (the plausibility cut) must be in (0, 1]")
        self.alpha, self.beta = float(alpha), float(beta)

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        if logprobs.shape[0] != 2:
            raise TransfuseError(f"the contrastive rule takes 2 models (expert, amateur), got {logprobs.shape[0]}")
        expert, amateur = logprobs.float()  # (B, V) each
        plausible = expert >= expert.amax(-1, keepdim=True) + math.log(self.alpha)  # (B, V)
        score = torch.where(plausible, expert - self.beta * amateur, torch.full_like(expert, -math.inf))
        return torch.log_softmax(score, dim=-1)
