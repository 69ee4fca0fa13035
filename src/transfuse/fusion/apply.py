"""Applying a fusion rule to K models' raw outputs of any shape: log-softmax, flatten to rows, fuse.

Classifier logits (B, C) and language-model logits (B, T, V) go through the same rule: every
leading axis is flattened to rows, so a rule only ever sees ``(K, rows, V)``. Rules and weights
are resolved and checked as ``fused_generate`` does (``fusion.generate``).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor

from .generate import check_rule, resolve_rule, resolve_weights
from .rules import FusionRule


def check_weights(weights: Optional[Sequence[float]], k: int, rule: FusionRule) -> Tensor:
    """(K,) float32 weights (ones when None), checked with the rule on dummy inputs before any model runs."""
    w = resolve_weights(weights, k, rule)
    check_rule(rule, k, w)
    return w


def fuse_logits(
    logits: Sequence[Tensor] | Tensor,
    rule: FusionRule,
    weights: Tensor,
    context: Optional[Dict[str, Any]] = None,
) -> Tensor:
    """K models' logits, each (..., V), -> fused log-probs (..., V) in float32.

    Each model's logits go through log_softmax in float32 first; the rule sees (K, rows, V).
    """
    stacked = torch.stack(list(logits)) if not isinstance(logits, Tensor) else logits  # (K, ..., V)
    k, lead, v = stacked.shape[0], stacked.shape[1:-1], stacked.shape[-1]
    logprobs = torch.log_softmax(stacked.float(), dim=-1).reshape(k, -1, v)  # (K, rows, V)
    fused = rule(logprobs, weights.to(logprobs.device), context)  # (rows, V)
    return fused.reshape(*lead, v)  # (..., V)


__all__ = ["resolve_rule", "check_weights", "fuse_logits"]
