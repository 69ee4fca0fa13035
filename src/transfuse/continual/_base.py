"""The continual method's hooks (defaults = plain fine-tuning) and the logit helpers they share."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ..data import IndexedTensors
from ..objectives._functional import cross_entropy
from .streams import Stream, Task


def restrict(logits: Tensor, classes: Optional[Tensor]) -> Tensor:
    """Logits (B, C) with every class outside ``classes`` set to -inf (task-incremental heads)."""
    if classes is None:
        return logits
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[classes] = True
    return logits.masked_fill(~keep, float("-inf"))


class ContinualMethod:
    """A continual method: hooks the per-task loop calls; every default is naive fine-tuning.

    setup(model, stream, generator) -> model   once, before task 0 (a method may wrap or change the model)
    train_set(task, seen) -> data              what to train on for this task (joint: everything seen)
    before_task(model, task)                   e.g. pick an initial mask, snapshot a teacher
    optimizer(params, lr) -> torch optimiser   a fresh one per task (default Adam)
    objective(model, batch, task) -> loss      the training loss of one batch (a scalar)
    after_backward(model, task)                edit gradients before the optimiser step (projections, masks)
    after_step(model, batch, task)             e.g. fill a replay buffer, update an EMA
    after_task(model, task)                    e.g. Fisher information, bases, frozen masks
    predict(model, inputs, task) -> logits     task is None when the scenario hides task ids
    """

    def setup(self, model: nn.Module, stream: Stream, generator: torch.Generator) -> nn.Module:
        self.stream = stream
        self.generator = generator
        masks = torch.zeros(len(stream.tasks), stream.num_classes, dtype=torch.bool)  # (T, C)
        for t in stream.tasks:
            masks[t.task_id, t.classes] = True
        self._task_masks = masks
        self._class_task = masks.float().argmax(0)  # (C,) the (first) task that holds each class
        return model

    def classes(self, task: Optional[Task]) -> Optional[Tensor]:
        """The classes a prediction may use: the task's when ids are known, else all."""
        return task.classes if task is not None and self.stream.task_ids_known else None

    def train_set(self, task: Task, seen: List[Task]) -> IndexedTensors:
        return task.train

    def before_task(self, model: nn.Module, task: Task) -> None:
        pass

    def optimizer(self, params: List[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr)

    def logits(self, model: nn.Module, inputs: Tensor, task: Optional[Task]) -> Tensor:
        return restrict(model(inputs), self.classes(task))  # (B, C)

    def by_labels(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Logits (B, C) restricted, row by row, to the classes of the task each label belongs to (when ids are known)."""
        if not self.stream.task_ids_known:
            return logits
        rows = self._task_masks.to(logits.device)[self._class_task.to(logits.device)[labels.clamp_min(0)]]  # (B, C)
        return logits.masked_fill(~rows, float("-inf"))

    def objective(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> Tensor:
        return cross_entropy(self.by_labels(model(batch["inputs"]), batch["labels"]), batch["labels"])

    def after_backward(self, model: nn.Module, task: Task) -> None:
        pass

    def after_step(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> None:
        pass

    def after_task(self, model: nn.Module, task: Task) -> None:
        pass

    def predict(self, model: nn.Module, inputs: Tensor, task: Optional[Task]) -> Tensor:
        return self.logits(model, inputs, task)


def batches(data: IndexedTensors, batch_size: int, generator: Optional[torch.Generator] = None):
    """Batches {"inputs", "labels", "index"} of ``data``, shuffled by ``generator`` when given."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield data.__getitems__(order[start : start + batch_size].tolist())
