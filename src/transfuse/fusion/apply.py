"""Applying a fusion rule to K models' raw outputs: resolve the rule, check the weights, log-softmax, flatten.

Classifier logits (B, C) and language-model logits (B, T, V) go through the same rule: every
leading axis is flattened to rows, so a rule only ever sees ``(K, rows, V)``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from ..errors import TransfuseError
from .rules import FusionRule, build_rule

RuleLike = Union[str, Mapping[str, Any], FusionRule]


def resolve_rule(rule: RuleLike) -> FusionRule:
    """A built rule from a registered name, a ``{"name": ..., **params}`` mapping, or a rule already built."""
    if isinstance(rule, str):
        return build_rule(rule)
    if isinstance(rule, Mapping):
        params = dict(rule)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise TransfuseError(f"a fusion rule mapping needs a name, e.g. {{name: mean}}; got {dict(rule)!r}")
        return build_rule(name, params)
    if callable(rule):
        return rule  # type: ignore[return-value]
    raise TransfuseError(f"rule must be a fusion-rule name, a {{name: ..., params}} mapping or a rule; got {type(rule).__name__}")


def check_weights(weights: Optional[Sequence[float]], k: int, rule: FusionRule) -> Tensor:
    """(K,) float32 weights: ones when None; the count must match and signs must suit the rule."""
    if weights is None:
        return torch.ones(k, dtype=torch.float32)
    w = torch.as_tensor(list(weights), dtype=torch.float32)
    if w.dim() != 1 or len(w) != k:
        raise TransfuseError(f"{k} models but {w.numel()} weights; give one weight per model (or none)")
    if not bool(torch.isfinite(w).all()):
        raise TransfuseError(f"fusion weights must be finite numbers; got {w.tolist()}")
    if not getattr(rule, "signed_weights", False) and bool((w < 0).any()):
        name = getattr(rule, "registry_name", type(rule).__name__)
        raise TransfuseError(f"rule {name!r} takes non-negative weights; got {w.tolist()}")
    if not getattr(rule, "signed_weights", False) and float(w.sum()) <= 0:
        raise TransfuseError(f"fusion weights must not all be zero; got {w.tolist()}")
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


__all__ = ["RuleLike", "resolve_rule", "check_weights", "fuse_logits"]
