"""The per-task training loop and the evaluation that fills the accuracy matrix.

A small explicit loop (Adam, fixed epochs) around the method's hooks. When the shared classifier
loop (src/transfuse/distill/loop.py) has its named steps, ``train_task`` should call them: the
method's ``objective`` is the loss step, ``after_backward`` sits between backward and step, and
``after_step`` after the optimiser step.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import nn

from ..data import IndexedTensors
from ._base import ContinualMethod, batches
from .streams import Task


@torch.no_grad()
def accuracy(model: nn.Module, method: ContinualMethod, task: Task, *, task_id_known: bool, batch_size: int = 1000) -> float:
    """Accuracy on ``task``'s test split; the method sees the task only when the scenario gives ids."""
    model.eval()
    correct = 0
    for batch in batches(task.test, batch_size):
        logits = method.predict(model, batch["inputs"], task if task_id_known else None)  # (B, C)
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
    model.train()
    return correct / max(len(task.test), 1)


def train_task(
    model: nn.Module,
    method: ContinualMethod,
    task: Task,
    data: IndexedTensors,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    on_epoch: Optional[Callable[[int], None]] = None,
) -> None:
    """Train ``model`` on ``data`` for ``epochs`` with a fresh optimiser (the method's), through its hooks."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = method.optimizer(params, lr)
    model.train()
    for epoch in range(epochs):
        for batch in batches(data, batch_size, generator):
            loss = method.objective(model, batch, task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward(model, task)
            opt.step()
            method.after_step(model, batch, task)
        if on_epoch is not None:
            on_epoch(epoch)


def evaluate_all(model: nn.Module, method: ContinualMethod, tasks: List[Task], *, task_id_known: bool) -> List[float]:
    return [accuracy(model, method, t, task_id_known=task_id_known) for t in tasks]
