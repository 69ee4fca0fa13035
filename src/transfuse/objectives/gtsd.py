"""Self-distillation with ground-truth guidance (multi-generation, MSE on probabilities)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import masked_mean, position_mask


@objectives.register("gtsd")
class GroundTruthSelfDistillation(Objective):
    """Borup & Andersen 2021, Even your Teacher Needs Guidance: a MSE(softmax f, y) + (1 - a) MSE(softmax f, softmax f_prev); followed Kennethborup/self_distillation self_distiller.py.

    The teacher is the previous generation (a teacher source that swaps in each trained
    student); a = ``alpha`` (0.6 in the README's command). MSE is the mean over classes as in
    F.mse_loss. The official l2 term (1e-4 sum of parameter norms) belongs to the optimizer here:
    use weight decay. The kernel-ridge toy of the README is in ``_gtsd_toy.py``.
    Unlabelled samples get only the distillation term.
    """

    is_divergence = True
    supports_tokens = True

    def __init__(self, *, alpha: float = 0.6) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("gtsd alpha must be in [0, 1]")
        self.alpha = alpha

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        p = student.logits.float().softmax(-1)  # (..., C)
        q = teacher.logits.detach().float().softmax(-1)
        distill = ((p - q) ** 2).mean(-1)  # (...,)
        keep = position_mask(batch.mask, distill)
        if batch.labels is None or self.alpha == 0.0:
            return masked_mean(distill, keep)
        labelled = batch.labels >= 0
        y = F.one_hot(batch.labels.clamp_min(0), p.shape[-1]).float()
        truth = ((p - y) ** 2).mean(-1)
        per_position = torch.where(labelled, self.alpha * truth + (1 - self.alpha) * distill, distill)
        return masked_mean(per_position, keep)
