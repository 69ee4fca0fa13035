"""ER: experience replay with a reservoir buffer (Chaudhry et al. 2019, "On tiny episodic memories").

Each step trains on the batch plus an equal-sized batch drawn from the buffer; the batch is then
offered to the buffer by reservoir sampling, so the memory is a uniform sample of the stream.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from ...errors import TransfuseError
from ...objectives._functional import cross_entropy
from .._base import ContinualMethod
from .._buffer import Reservoir
from ..streams import Task
from . import methods


@methods.register("er")
class ER(ContinualMethod):
    """ER (Chaudhry et al. 2019): replay a reservoir-sampled memory of past samples alongside each batch."""

    def __init__(self, *, buffer_size: int = 200, replay_batch: int = 32) -> None:
        if buffer_size < 1 or replay_batch < 1:
            raise TransfuseError(f"er needs buffer_size >= 1 and replay_batch >= 1; got {buffer_size} and {replay_batch}")
        self.buffer_size = buffer_size
        self.replay_batch = replay_batch
        self.buffer = None

    def setup(self, model, stream, generator):
        self.buffer = Reservoir(self.buffer_size, generator)
        return super().setup(model, stream, generator)

    def objective(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> Tensor:
        x, y = batch["inputs"], batch["labels"]
        if len(self.buffer):
            old = self.buffer.sample(self.replay_batch)
            x, y = torch.cat([x, old["inputs"]]), torch.cat([y, old["labels"]])
        return cross_entropy(self.by_labels(model(x), y), y)

    def after_step(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> None:
        self.buffer.add(inputs=batch["inputs"], labels=batch["labels"])
