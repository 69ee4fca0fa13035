"""Logit-swap self-distillation (LSSD) against a frozen copy of the model."""
from __future__ import annotations

import torch
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import kl, masked_mean, position_mask


def swap_gold_with_max(logits: Tensor, labels: Tensor) -> Tensor:
    """Exchange each position's gold-label logit with its largest logit; labels < 0 keep theirs.

    logits (..., V), labels (...) -> (..., V) float32.
    """
    z = logits.float()
    valid = (labels >= 0).unsqueeze(-1)  # (..., 1)
    gold = labels.clamp_min(0).long().unsqueeze(-1)  # (..., 1)
    z_gold = z.gather(-1, gold)
    z_max, arg = z.max(-1, keepdim=True)
    swapped = z.scatter(-1, arg, z_gold).scatter(-1, gold, z_max)
    return torch.where(valid, swapped, z)


@objectives.register("lssd")
class LogitSwapSelfDistillation(Objective):
    """Mix-CPT (Jiang et al. 2024) logit-swap self-distillation; no official code, formula from the paper.

    The teacher is a frozen copy of the starting model. Its logits, with the gold token's
    logit exchanged with the largest one (so the gold token becomes the argmax while the rest
    of the distribution is kept), are the target of T^2 KL(target || p_s), used instead of CE.
    Works for classifiers (logits (B, C), labels (B,)) and language models ((B, T, V), (B, T));
    positions without a label (< 0) distil the frozen model unchanged. Needs dense teacher logits.
    """

    supports_tokens = True

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("lssd temperature must be > 0")
        self.temperature = temperature

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if teacher.logits is None:
            raise ValueError("lssd needs the frozen model's dense logits, not a top-k cache")
        if batch.labels is None:
            raise ValueError("lssd needs labels (the gold tokens or classes)")
        target = swap_gold_with_max(teacher.logits.detach(), batch.labels)  # (B, [T,] V)
        per_position = kl(target, student.logits, self.temperature)  # (B,) or (B, T)
        return masked_mean(per_position, position_mask(batch.mask, per_position)) * self.temperature**2
