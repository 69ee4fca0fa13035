"""EWC: elastic weight consolidation (Kirkpatrick et al. 2017), the online form (Schwarz et al. 2018).

After each task the diagonal empirical Fisher (mean squared gradient of the task's loss per batch)
is added to a running sum and the weights are anchored; the loss adds
lambda / 2 * sum_i F_i (theta_i - theta*_i)^2.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor, nn

from ...errors import TransfuseError
from .._base import ContinualMethod, batches
from ..streams import Task
from . import methods


@methods.register("ewc")
class EWC(ContinualMethod):
    """EWC (Kirkpatrick et al. 2017): a quadratic pull toward earlier tasks' weights, scaled by their Fisher information."""

    def __init__(self, *, ewc_lambda: float = 100.0, decay: float = 1.0, fisher_batches: int = 20, batch_size: int = 64) -> None:
        if ewc_lambda < 0 or not 0.0 <= decay <= 1.0:
            raise TransfuseError(f"ewc needs ewc_lambda >= 0 and 0 <= decay <= 1; got {ewc_lambda} and {decay}")
        self.ewc_lambda = ewc_lambda
        self.decay = decay
        self.fisher_batches = fisher_batches
        self.batch_size = batch_size
        self.fisher: Dict[str, Tensor] = {}
        self.anchor: Dict[str, Tensor] = {}

    def objective(self, model: nn.Module, batch: Dict[str, Tensor], task: Task) -> Tensor:
        loss = super().objective(model, batch, task)
        if not self.fisher:
            return loss
        penalty = sum(
            (self.fisher[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in model.named_parameters() if n in self.fisher
        )
        return loss + 0.5 * self.ewc_lambda * penalty

    def after_task(self, model: nn.Module, task: Task) -> None:
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        count = 0
        for i, batch in enumerate(batches(task.train, self.batch_size, self.generator)):
            if i >= self.fisher_batches:
                break
            model.zero_grad()
            ContinualMethod.objective(self, model, batch, task).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float().pow(2)
            count += 1
        model.zero_grad()
        for n in params:
            old = self.fisher.get(n)
            new = fisher[n] / max(count, 1)
            self.fisher[n] = new if old is None else self.decay * old + new
            self.anchor[n] = params[n].detach().clone()
