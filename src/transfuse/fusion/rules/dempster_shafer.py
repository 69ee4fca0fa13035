"""Dempster-Shafer combination of classifiers' outputs, read as subjective-logic opinions."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from . import FusionRule, rules
from ._math import probability_weights


def _combine(b1: Tensor, u1: Tensor, b2: Tensor, u2: Tensor) -> tuple[Tensor, Tensor]:
    """Dempster's rule for two opinions over singletons: beliefs (B, C), uncertainties (B, 1)."""
    conflict = b1.sum(-1, keepdim=True) * b2.sum(-1, keepdim=True) - (b1 * b2).sum(-1, keepdim=True)  # (B, 1)
    scale = 1.0 / (1.0 - conflict).clamp_min(1e-12)
    return scale * (b1 * b2 + b1 * u2 + b2 * u1), scale * u1 * u2


@rules.register("dempster_shafer")
class DempsterShafer(FusionRule):
    """Dempster-Shafer fusion of classifiers (Han et al. 2021, trusted multi-view classification).

    As the HEA discovery paper's model fusion: each model's probabilities p become Dirichlet
    evidence e = strength * K * w_k * p (weights discount a model's evidence, w normalised to sum 1),
    belief b = e / S and uncertainty u = C / S with S = sum(e) + C; opinions are combined with
    Dempster's rule and the result is read out as b + u / C.

    For classifiers: ``strength`` is the evidence a fully trusted model brings, since normalised
    probabilities carry no evidence scale of their own. Confident, agreeing models reinforce each
    other; a model that disagrees with the others lowers the combined belief through the conflict term.
    """

    identity_for_one = False

    def __init__(self, *, strength: float = 10.0) -> None:
        if strength <= 0:
            raise ValueError("dempster_shafer strength (evidence per model) must be > 0")
        self.strength = float(strength)

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        k, _, classes = logprobs.shape
        w = probability_weights(weights).to(logprobs.device) * k  # (K,), mean 1
        b = u = None
        for i in range(k):
            evidence = self.strength * w[i] * logprobs[i].float().exp()  # (B, C)
            s = evidence.sum(-1, keepdim=True) + classes  # (B, 1)
            bi, ui = evidence / s, classes / s
            b, u = (bi, ui) if b is None else _combine(b, u, bi, ui)
        probs = b + u / classes  # (B, C), sums to 1
        return torch.log(probs / probs.sum(-1, keepdim=True))
