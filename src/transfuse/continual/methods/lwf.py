"""LwF: learning without forgetting (Li & Hoiem 2017): distil the previous model's outputs on the new data.

The previous model's logits over the classes seen so far are the targets of a temperature-T
KL term (the library's kd math, ``objectives._functional.kl``), scaled by T^2 like Hinton's kd.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ...errors import TransfuseError
from ...objectives._functional import kl
from .._base import ContinualMethod
from ..streams import Task
from . import methods


@methods.register("lwf")
class LwF(ContinualMethod):
    """LwF (Li & Hoiem 2017): the previous model is a teacher on the new task's inputs, over the old classes."""

    def __init__(self, *, alpha: float = 1.0, temperature: float = 2.0) -> None:
        if alpha < 0 or temperature <= 0:
            raise TransfuseError(f"lwf needs alpha >= 0 and temperature > 0; got {alpha} and {temperature}")
        self.alpha = alpha
        self.temperature = temperature
        self.teacher: Optional[nn.Module] = None
        self.old_classes: Optional[Tensor] = None

    def objective(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> Tensor:
        logits = model(batch["inputs"])  # (B, C)
        from ...objectives._functional import cross_entropy

        loss = cross_entropy(self.by_labels(logits, batch["labels"]), batch["labels"])
        if self.teacher is None:
            return loss
        with torch.no_grad():
            old = self.teacher(batch["inputs"])[:, self.old_classes]  # (B, C_old)
        distil = kl(old, logits[:, self.old_classes], self.temperature).mean()
        return loss + self.alpha * self.temperature**2 * distil

    def after_task(self, model: nn.Module, task: Task) -> None:
        self.teacher = copy.deepcopy(model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        seen = task.classes if self.old_classes is None else torch.cat([self.old_classes, task.classes])
        self.old_classes = torch.unique(seen)
