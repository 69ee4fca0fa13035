"""Finetune: naive sequential training on each task in turn, the lower bound (van de Ven & Tolias 2019)."""
from __future__ import annotations

from .._base import ContinualMethod
from . import methods


@methods.register("finetune")
class Finetune(ContinualMethod):
    """Finetune (naive): train on each task in turn with no protection against forgetting."""

    def __init__(self) -> None:
        pass
