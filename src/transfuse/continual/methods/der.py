"""DER: dark experience replay (Buzzega et al. 2020): the buffer keeps logits and the model matches them.

loss = CE(batch) + alpha * MSE(logits on buffer inputs, stored logits) + beta * CE(buffer labels);
beta > 0 is DER++. Logits are stored when a sample enters the reservoir (as in the paper).
"""
from __future__ import annotations

from typing import Dict

from torch import Tensor, nn

from ...errors import TransfuseError
from ...objectives._functional import cross_entropy
from .._base import ContinualMethod
from .._buffer import Reservoir
from ..streams import Task
from . import methods


@methods.register("der")
class DER(ContinualMethod):
    """DER / DER++ (Buzzega et al. 2020): replay past samples with their logits, matched by mean squared error."""

    def __init__(self, *, buffer_size: int = 200, replay_batch: int = 32, alpha: float = 0.3, beta: float = 0.5) -> None:
        if buffer_size < 1 or replay_batch < 1 or alpha < 0 or beta < 0:
            raise TransfuseError("der needs buffer_size >= 1, replay_batch >= 1, alpha >= 0 and beta >= 0")
        self.buffer_size = buffer_size
        self.replay_batch = replay_batch
        self.alpha = alpha
        self.beta = beta
        self.buffer = None
        self._last_logits = None

    def setup(self, model, stream, generator):
        self.buffer = Reservoir(self.buffer_size, generator)
        return super().setup(model, stream, generator)

    def objective(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> Tensor:
        logits = model(batch["inputs"])  # (B, C)
        self._last_logits = logits.detach()
        loss = cross_entropy(self.by_labels(logits, batch["labels"]), batch["labels"])
        if len(self.buffer):
            old = self.buffer.sample(self.replay_batch)
            replay = model(old["inputs"])  # (R, C)
            loss = loss + self.alpha * (replay.float() - old["logits"]).pow(2).mean()
            if self.beta > 0:
                old2 = self.buffer.sample(self.replay_batch)
                loss = loss + self.beta * cross_entropy(self.by_labels(model(old2["inputs"]), old2["labels"]), old2["labels"])
        return loss

    def after_step(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> None:
        self.buffer.add(inputs=batch["inputs"], labels=batch["labels"], logits=self._last_logits.float())
