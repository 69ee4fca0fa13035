"""Dynamic logit fusion: per-step weights on small experts' deltas, solved so the shifts match."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ...errors import TransfuseError
from . import FusionRule, rules


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) over the last dim, float32: (..., V) -> (...)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@rules.register("dlf")
class DynamicLogitFusion(FusionRule):
    """Fan et al. 2024 (DLF, On Giant's Shoulders): z_L + sum_i a_i (z_i - z_S), a_i solved per step.

    a_i is chosen at every step so that KL(p_fused_i || p_L) equals the small pair's shift KL(p_i || p_S).

    Models in the order (large base, small base, small expert_1, ..., small expert_m). No official
    code was released; this follows the paper's description: each a_i is solved alone by bisection
    on [0, ``max_weight``] (the KL grows monotonically with a_i, its derivative being a_i times the
    variance of the delta under the fused distribution), vectorised over the batch, and the deltas
    are then added together. The solved weights (B, m) are left in ``context["dlf_weights"]``.
    """

    identity_for_one = False
    uses_weights = False
    models = "2 + m: large base, small base, then m small experts"

    def __init__(self, *, max_weight: float = 2.0, iterations: int = 24) -> None:
        if max_weight <= 0 or iterations < 1:
            raise ValueError("dlf needs max_weight > 0 and iterations >= 1")
        self.max_weight, self.iterations = float(max_weight), int(iterations)

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:
        if logprobs.shape[0] < 3:
            raise TransfuseError(
                f"the dlf rule takes a large base, a small base and at least one small expert, got {logprobs.shape[0]} models"
            )
        lp = logprobs.float()
        large, small, experts = lp[0], lp[1], lp[2:]  # (B, V), (B, V), (m, B, V)
        deltas = experts - small  # (m, B, V)
        target = _kl_rows(experts, small.unsqueeze(0))  # (m, B): each small pair's shift
        lo = torch.zeros_like(target)
        hi = torch.full_like(target, self.max_weight)
        for _ in range(self.iterations):
            mid = (lo + hi) / 2
            moved = torch.log_softmax(large + mid.unsqueeze(-1) * deltas, dim=-1)  # (m, B, V)
            too_far = _kl_rows(moved, large.unsqueeze(0)) > target  # (m, B)
            hi = torch.where(too_far, mid, hi)
            lo = torch.where(too_far, lo, mid)
        a = (lo + hi) / 2  # (m, B)
        if context is not None:
            context["dlf_weights"] = a.t()  # (B, m)
        return torch.log_softmax(large + (a.unsqueeze(-1) * deltas).sum(0), dim=-1)  # (B, V)
