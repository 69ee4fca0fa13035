"""Talking models: message encoders/decoders between a student's and a teacher's hidden states."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._features import PENULTIMATE, hidden, penultimate_width, teacher_model
from ._functional import cross_entropy, kl


def _mlp(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))


@objectives.register("talking")
class TalkingModels(Objective):
    """Talking Models (METHODS.md A): each model gets a message encoder and decoder over its hidden state; reconstruction + interaction + task losses; no code was found, so the terms below are this library's reading of the abstract (unverified).

    m_s = E_s(h_s), m_t = E_t(h_t) with h at ``"penultimate"`` (forward hooks); decoders map
    messages back. Losses: reconstruction ||D_t(m_t) - h_t||^2 + ||D_s(m_s) - h_s||^2 (the
    student's hidden state detached there); interaction ||D_s(m_t) - h_s||^2 (the teacher's
    message, read in the student's language, pulls the student's hidden state) + ||m_s - m_t||^2
    (m_t detached); task (1 - alpha) CE + alpha T^2 KL. Encoders/decoders are submodules, so
    checkpoints save them; the teacher side learns from reconstruction only.
    """

    student_features = (PENULTIMATE,)
    teacher_features = (PENULTIMATE,)

    def __init__(self, *, message_dim: int = 64, student_dim: int = 0, teacher_dim: int = 0, recon_weight: float = 1.0,
                 interaction_weight: float = 1.0, alpha: float = 0.9, temperature: float = 4.0) -> None:
        super().__init__()
        self.message_dim, self.student_dim, self.teacher_dim = message_dim, student_dim, teacher_dim
        self.recon_weight, self.interaction_weight = recon_weight, interaction_weight
        self.alpha, self.temperature = alpha, temperature
        self._build()

    def _build(self) -> None:
        m = self.message_dim
        if self.student_dim and not hasattr(self, "enc_s"):
            self.enc_s, self.dec_s = _mlp(self.student_dim, m), _mlp(m, self.student_dim)
        if self.teacher_dim and not hasattr(self, "enc_t"):
            self.enc_t, self.dec_t = _mlp(self.teacher_dim, m), _mlp(m, self.teacher_dim)

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        self.student_dim = self.student_dim or penultimate_width(student)
        model = teacher_model(teacher)
        if not self.teacher_dim and model is not None:
            self.teacher_dim = penultimate_width(model)
        self._build()

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if not hasattr(self, "enc_s") or not hasattr(self, "enc_t"):
            raise ValueError("talking needs student_dim and teacher_dim, or bind(student, teacher=model) to read them")
        h_s = hidden(student, PENULTIMATE, objective="talking").flatten(1).float()  # (B, D_s)
        h_t = hidden(teacher, PENULTIMATE, objective="talking", side="teacher").flatten(1).detach().float()  # (B, D_t)
        m_s, m_t = self.enc_s(h_s), self.enc_t(h_t)  # (B, m)
        recon = F.mse_loss(self.dec_t(m_t), h_t) + F.mse_loss(self.dec_s(self.enc_s(h_s.detach())), h_s.detach())
        interaction = F.mse_loss(h_s, self.dec_s(m_t).detach()) + F.mse_loss(m_s, m_t.detach())
        soft = kl(teacher.logits.detach(), student.logits, self.temperature).mean() * self.temperature**2
        loss = self.alpha * soft + self.recon_weight * recon + self.interaction_weight * interaction
        if batch.labels is not None and self.alpha < 1:
            loss = loss + (1 - self.alpha) * cross_entropy(student.logits, batch.labels)
        return loss
