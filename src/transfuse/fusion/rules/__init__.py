"""Fusion rules: ``rule(logprobs (K, B, V), weights (K,)) -> log-probs (B, V)``, one file per rule.

A rule is a small ``nn.Module``-free object built from keyword-only hyperparameters (the
signature is the schema, as for objectives). It receives the K models' log-probs over the same
vocabulary (or classes) in float32 and non-negative or signed weights, and returns normalised
log-probs. Rules that keep state across decoding steps (DLF solves its weights per step) get the
step's ``context`` (a dict the caller owns; ``None`` outside generation).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from torch import Tensor

from ...registry import Registry

rules: Registry = Registry("fusion-rule", "transfuse.fusion.rules")


class FusionRule:
    """Interface every fusion rule follows."""

    #: True when K = 1 with weight 1 returns the input unchanged (contract test).
    identity_for_one: bool = True
    #: True when weights may be negative; otherwise they must be >= 0.
    signed_weights: bool = False
    #: False for rules whose mix is set by their own parameters (proxy's alpha, EFT's beta, DLF's solve).
    uses_weights: bool = True
    #: How many models the rule takes, and in which order (shown by ``transfuse list fusion-rules``).
    models: str = "any number"

    def __call__(self, logprobs: Tensor, weights: Tensor, context: Optional[Dict[str, Any]] = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def build_rule(name: str, params: dict | None = None) -> FusionRule:
    """A fusion rule from its registered name (or dotted path) and keyword parameters."""
    from ...registry import build

    return build(rules, name, params)


__all__ = ["FusionRule", "rules", "build_rule"]
