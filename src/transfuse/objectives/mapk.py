"""Self-knowledge distillation weighted by the teacher's mAP@k on the gold answer."""
from __future__ import annotations

import torch
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import cross_entropy, kl, masked_mean, position_mask


def reciprocal_rank_at_k(teacher_logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """AP@k with one relevant item = 1/rank of the gold class in the teacher's top k, 0 if absent. (...) ."""
    k = min(k, teacher_logits.shape[-1])
    top = teacher_logits.topk(k, dim=-1).indices  # (..., k)
    hit = top == labels.unsqueeze(-1)
    ranks = torch.arange(1, k + 1, device=top.device, dtype=torch.float32)
    return (hit.float() / ranks).sum(-1)


@objectives.register("mapk")
class MapAtKDistillation(Objective):
    """Carrino et al. 2023, Promoting Generalized Cross-lingual QA in Few-resource Scenarios via Self-knowledge Distillation: CE + mAP@k(teacher) T^2 KL; followed ccasimiro88/self-distillation-gxlt-qa src/utils.py (compute_kl_map_at_k_coefficients).

    As in the official code the coefficient is one number per batch: the mean over labelled
    samples of AP@k of the teacher's top-k (k=10) against the gold class, which with one gold
    item is its reciprocal rank (the official QA version counts a +-5 token window as gold;
    classes have no window). ``per_sample=True`` weights each sample by its own AP@k instead.
    The teacher is a copy of the student refreshed each epoch (a teacher source); T=2 as in
    train_skd_map.sh. Unlabelled samples give no coefficient and no CE.
    """

    supports_tokens = True

    def __init__(self, *, k: int = 10, temperature: float = 2.0, ce_weight: float = 1.0, per_sample: bool = False) -> None:
        super().__init__()
        if k < 1:
            raise ValueError("mapk k must be >= 1")
        self.k, self.temperature, self.ce_weight, self.per_sample = k, temperature, ce_weight, per_sample
        self.register_buffer("last_coefficient", torch.tensor(0.0))

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        per_position = kl(teacher.logits.detach(), student.logits, self.temperature) * self.temperature**2
        keep = position_mask(batch.mask, per_position)
        if batch.labels is None:
            return per_position.sum() * 0.0
        labelled = batch.labels >= 0
        keep_l = labelled if keep is None else keep & labelled
        ap = reciprocal_rank_at_k(teacher.logits.detach(), batch.labels.clamp_min(0), self.k)
        if self.per_sample:
            soft = masked_mean(ap * per_position, keep_l)
            self.last_coefficient.fill_(float(masked_mean(ap, keep_l)))
        else:
            coefficient = masked_mean(ap, keep_l)
            self.last_coefficient.fill_(float(coefficient))
            soft = coefficient * masked_mean(per_position, keep)
        return soft + self.ce_weight * cross_entropy(student.logits, batch.labels)
