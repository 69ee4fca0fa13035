"""Continual methods: one file per method, each a :class:`ContinualMethod` registered by name."""
from __future__ import annotations

from ...registry import Registry

methods: Registry = Registry("continual-method", "transfuse.continual.methods")


def build_method(name: str, params: dict | None = None):
    from ...registry import build

    return build(methods, name, params)


__all__ = ["methods", "build_method"]
