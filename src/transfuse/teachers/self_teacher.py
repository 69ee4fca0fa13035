"""A teacher that is the student's own past: a snapshot refreshed every few epochs, or an EMA."""
from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from ..signals import Batch, Outputs


class SelfTeacher:
    """The student's past as its teacher (self-distillation, DESIGN: "a teacher that is the student's past").

    every_epochs: the frozen copy is replaced by the current student after every this many epochs
    (mAP@k self-KD refreshes each epoch; a generation of GT-guided self-distillation spans several).
    ema_decay: instead keep an exponential moving average of the student, updated after each step.
    Before the first refresh the teacher is the student as it was when training started. Its
    weights are part of the loop's checkpoints, so a resumed run sees the same teacher.
    """

    stateful = True

    def __init__(self, *, every_epochs: int = 1, ema_decay: Optional[float] = None) -> None:
        if every_epochs < 1:
            raise ValueError("every_epochs must be >= 1")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError("ema_decay must be between 0 and 1")
        self.every_epochs = every_epochs
        self.ema_decay = ema_decay
        self.model: Optional[nn.Module] = None

    def attach(self, student: nn.Module) -> None:
        self.model = copy.deepcopy(student).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device) -> "SelfTeacher":
        if self.model is not None:
            self.model.to(device)
        return self

    @torch.no_grad()
    def on_step_end(self, student: nn.Module) -> None:
        if self.ema_decay is None:
            return
        for t, s in zip(self.model.state_dict().values(), student.state_dict().values()):
            if t.dtype.is_floating_point:
                t.mul_(self.ema_decay).add_(s.detach(), alpha=1 - self.ema_decay)
            else:
                t.copy_(s)

    @torch.no_grad()
    def on_epoch_end(self, student: nn.Module, epoch: int) -> None:
        if self.ema_decay is None and epoch % self.every_epochs == 0:
            self.model.load_state_dict(student.state_dict())

    def state_dict(self) -> Dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self.model.load_state_dict(state)

    def __call__(self, batch: Batch, features: Sequence[str] = ()) -> Outputs:
        from . import frozen_forward

        return frozen_forward(self.model, batch, features)
