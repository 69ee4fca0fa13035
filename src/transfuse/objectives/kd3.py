"""KD^3: distillation on a shifted (web) transfer set, with sample selection by joint confidence."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._features import PENULTIMATE, hidden, penultimate_width, teacher_model
from ._functional import cross_entropy, kl


@objectives.register("kd3")
class DistributionShiftKD(Objective):
    """Tang et al. 2023, Distribution Shift Matters for KD with Webly Collected Images (KD^3): select transfer samples by combined teacher+student confidence, align weighted features and predictions, feature-statistics mixing views; no code was found, so the details below are this library's reading (unverified).

    Per sample, with y_t the teacher's top class: c = (p_t[y_t] + p_s[y_t]) / 2 (student part
    detached); a sample is selected when c >= ``threshold``; its weight is c. Loss over selected
    samples: sum c (T^2 KL(p_t || p_s) + feature_weight ||norm(P h_s) - norm(h_t)||^2) / #selected,
    with P a linear projector owned by the objective; plus ``ce_weight`` CE on labelled samples.
    ``prepare`` makes the statistics-mixing view: with probability ``mix_prob`` a sample's
    per-channel mean/std are replaced by a mix (lambda ~ Beta(0.1, 0.1)) with another sample's
    (MixStyle on the inputs); teacher and student both see it. The classifier alignment of the
    paper is not implemented.
    """
    #: prepare() changes the inputs, so the teacher must run live on them (no logits cache).
    changes_inputs = True

    student_features = (PENULTIMATE,)
    teacher_features = (PENULTIMATE,)

    def __init__(self, *, threshold: float = 0.5, temperature: float = 4.0, feature_weight: float = 1.0, ce_weight: float = 0.1,
                 mix_prob: float = 0.5, teacher_dim: int = 0) -> None:
        super().__init__()
        if not 0.0 <= mix_prob <= 1.0:
            raise ValueError("kd3 mix_prob must be in [0, 1]")
        self.threshold, self.temperature, self.feature_weight = threshold, temperature, feature_weight
        self.ce_weight, self.mix_prob = ce_weight, mix_prob
        self.projector = nn.LazyLinear(teacher_dim) if teacher_dim else None
        self.register_buffer("selected_share", torch.tensor(0.0))

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        model = teacher_model(teacher)
        if self.projector is None and model is not None:
            self.projector = nn.LazyLinear(penultimate_width(model))

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        x = batch.inputs
        if self.mix_prob == 0 or x.dim() < 3 or not x.is_floating_point():
            return batch
        n = x.shape[0]
        dims = tuple(range(2, x.dim()))
        mu = x.mean(dims, keepdim=True)  # (B, C, 1, 1)
        sig = x.std(dims, keepdim=True).clamp_min(1e-5)
        perm = torch.randperm(n, generator=generator)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        lam = torch.from_numpy(rng.beta(0.1, 0.1, n)).float().view((n,) + (1,) * (x.dim() - 1)).to(x.device)
        mixed = (x - mu) / sig * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]
        use = (torch.rand(n, generator=generator) < self.mix_prob).view((n,) + (1,) * (x.dim() - 1)).to(x.device)
        return Batch(inputs=torch.where(use, mixed, x), labels=batch.labels, index=batch.index, mask=batch.mask, extra=batch.extra)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if self.projector is None:
            raise ValueError("kd3 needs teacher_dim (the teacher feature width) or bind(student, teacher=model)")
        t = teacher.logits.detach().float()
        p_t = t.softmax(-1)
        y_t = p_t.argmax(-1, keepdim=True)
        c = (p_t.gather(-1, y_t) + student.logits.detach().float().softmax(-1).gather(-1, y_t)).squeeze(-1) / 2  # (B,)
        chosen = c >= self.threshold
        self.selected_share.fill_(float(chosen.float().mean()))
        h_s = F.normalize(self.projector(hidden(student, PENULTIMATE, objective="kd3").flatten(1).float()), dim=-1)
        h_t = F.normalize(hidden(teacher, PENULTIMATE, objective="kd3", side="teacher").flatten(1).detach().float(), dim=-1)
        per_sample = kl(t, student.logits, self.temperature) * self.temperature**2 + self.feature_weight * ((h_s - h_t) ** 2).sum(-1)
        weight = c * chosen
        loss = (weight * per_sample).sum() / chosen.sum().clamp_min(1)
        if self.ce_weight and batch.labels is not None:
            loss = loss + self.ce_weight * cross_entropy(student.logits, batch.labels)
        return loss
