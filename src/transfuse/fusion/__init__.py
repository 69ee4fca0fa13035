"""Fusion: several models' next-token (or class) log-probs combined into one distribution.

The rules live in ``fusion.rules`` (registry ``fusion-rules``, one file per rule); ensembles of
teachers, federated ensemble distillation and fused generation all call the same rules.
"""
from .rules import FusionRule, build_rule, rules

__all__ = ["FusionRule", "build_rule", "rules"]
