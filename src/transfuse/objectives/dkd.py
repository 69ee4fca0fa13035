"""Decoupled knowledge distillation (DKD)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import cross_entropy, masked_mean, position_mask


def _targets(student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
    """Gold class where labelled, the teacher's top class elsewhere. (B,) or (B, T)."""
    guess = teacher.logits.argmax(-1)
    if batch.labels is None or batch.labels.shape != guess.shape:
        return guess
    return torch.where(batch.labels >= 0, batch.labels, guess)


def dkd_per_position(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, alpha: float, beta: float, temperature: float) -> Tensor:
    """alpha TCKD + beta NCKD per position, times T^2. logits (..., C), target (...) -> (...)."""
    gold = torch.nn.functional.one_hot(target, student_logits.shape[-1]).bool()  # (..., C)
    s = student_logits.float() / temperature
    t = teacher_logits.detach().float() / temperature
    p_s, p_t = s.softmax(-1), t.softmax(-1)
    # binary (gold, rest) distributions
    b_s = torch.stack([(p_s * gold).sum(-1), (p_s * ~gold).sum(-1)], -1).clamp_min(1e-12)  # (..., 2)
    b_t = torch.stack([(p_t * gold).sum(-1), (p_t * ~gold).sum(-1)], -1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(-1)
    # distribution over the non-gold classes: the gold logit pushed to -inf (mdistiller: -1000)
    log_q_s = (s - 1000.0 * gold).log_softmax(-1)
    log_q_t = (t - 1000.0 * gold).log_softmax(-1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(-1)
    return (alpha * tckd + beta * nckd) * temperature**2


@objectives.register("dkd")
class DecoupledKD(Objective):
    """Zhao et al. 2022, Decoupled KD: CE + min(epoch/warmup, 1) (alpha TCKD + beta NCKD) T^2; followed megvii-research/mdistiller mdistiller/distillers/DKD.py.

    TCKD is the KL between the binary (gold, not-gold) distributions, NCKD the KL between the
    distributions over the non-gold classes. Unlabelled samples take the teacher's top class as
    gold and get no CE. The warm-up factor uses the 1-based epoch, kept in a buffer.
    """

    is_divergence = True
    supports_tokens = True

    def __init__(self, *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, ce_weight: float = 1.0, warmup_epochs: float = 20.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("dkd temperature must be > 0")
        if warmup_epochs < 0:
            raise ValueError("dkd warmup_epochs must be >= 0")
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.ce_weight, self.warmup_epochs = ce_weight, warmup_epochs
        self.register_buffer("epoch", torch.tensor(1.0))  # the 1-based epoch now running

    def warmup_factor(self) -> float:
        if self.warmup_epochs == 0:
            return 1.0
        return min(float(self.epoch) / self.warmup_epochs, 1.0)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        target = _targets(student, teacher, batch)
        per_position = dkd_per_position(student.logits, teacher.logits, target, self.alpha, self.beta, self.temperature)
        loss = self.warmup_factor() * masked_mean(per_position, position_mask(batch.mask, per_position))
        if self.ce_weight and batch.labels is not None:
            loss = loss + self.ce_weight * cross_entropy(student.logits, batch.labels)
        return loss

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        self.epoch.fill_(epoch + 1)  # the loop passes the number of finished epochs
