"""Joint: at task t train on the union of tasks 0..t, the usual upper bound of a stream."""
from __future__ import annotations

from typing import List

import torch

from ...data import IndexedTensors
from .._base import ContinualMethod
from ..streams import Task
from . import methods


@methods.register("joint")
class Joint(ContinualMethod):
    """Joint (cumulative) training: every task's data so far, the upper bound that needs all past data."""

    def __init__(self) -> None:
        pass

    def train_set(self, task: Task, seen: List[Task]) -> IndexedTensors:
        parts = [t.train for t in seen] + [task.train]
        return IndexedTensors(
            torch.cat([p.inputs for p in parts]), torch.cat([p.labels for p in parts]), torch.cat([p.index for p in parts])
        )
