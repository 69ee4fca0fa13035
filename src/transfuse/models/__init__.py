"""Models: a small zoo plus Hugging Face classifiers by local path, one file per entry.

A factory takes the data's shape as ``in_shape`` and ``num_classes`` and its own keyword-only
parameters, and returns an ``nn.Module`` whose forward maps inputs to logits (B, C) (or a
Hugging Face output with ``.logits``).
"""
from __future__ import annotations

from typing import Tuple

from torch import nn

from ..registry import Registry

models: Registry = Registry("model", "transfuse.models")


def build_model(name: str, params: dict | None, *, in_shape: Tuple[int, ...], num_classes: int) -> nn.Module:
    from ..registry import build

    return build(models, name, params, in_shape=tuple(in_shape), num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["models", "build_model", "count_parameters"]
