"""Self-supervised label augmentation (SLA) with aggregated self-distillation."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._features import PENULTIMATE, hidden

ROTATIONS = 4


@objectives.register("sla")
class SelfSupervisedLabelAugmentation(Objective):
    """Lee et al. 2020, Self-supervised Label Augmentation (SLA+SD): joint (class x rotation) head, CE_joint + CE_single + T^2 KL(aggregated joint || single); followed hankook/SLA trainers.py (create_sla_sd_trainer).

    ``prepare`` turns each image into its 4 rotations (0, 90, 180, 270 degrees; rows b*4 + r). The
    model's own head is the single head, used on the unrotated rows; the joint head is a linear
    layer owned by this objective on the student's penultimate features (taken by a forward
    hook), so the model is unchanged and inference uses only its own head. Joint label = 4y + r.
    The aggregated prediction is the mean over r of the joint logits of (row r, class c, rotation r),
    detached as in the official code. No teacher.
    """
    #: prepare() changes the inputs, so the teacher must run live on them (no logits cache).
    changes_inputs = True

    needs_teacher = False
    student_features = (PENULTIMATE,)

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self.joint = nn.LazyLinear(1)  # replaced by bind() once the class count is known

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        linears = [m for m in student.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("sla needs a student whose last layer is an nn.Linear head")
        head = linears[-1]
        if self.joint.out_features != head.out_features * ROTATIONS:
            self.joint = nn.Linear(head.in_features, head.out_features * ROTATIONS)

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        x = batch.inputs  # (B, C, H, W)
        if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"sla rotates square images (B, C, H, W); got inputs of shape {tuple(x.shape)}")
        rotated = torch.stack([torch.rot90(x, r, dims=(-2, -1)) for r in range(ROTATIONS)], 1)  # (B, 4, C, H, W)
        repeat = lambda t: None if t is None else t.repeat_interleave(ROTATIONS, 0)  # noqa: E731
        extra = dict(batch.extra, sla_rotations=ROTATIONS)
        return Batch(inputs=rotated.flatten(0, 1), labels=repeat(batch.labels), index=repeat(batch.index), mask=None, extra=extra)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if batch.extra.get("sla_rotations") != ROTATIONS:
            raise ValueError("sla needs the batch from its prepare() (the 4 rotations of each image)")
        feats = hidden(student, PENULTIMATE, objective="sla").flatten(1)  # (4B, D)
        joint = self.joint(feats).float()  # (4B, 4C)
        single = student.logits.float()[::ROTATIONS]  # (B, C) unrotated rows
        labels = batch.labels[::ROTATIONS]  # (B,)
        rot = torch.arange(ROTATIONS, device=joint.device).repeat(labels.shape[0])  # (4B,)
        keep = labels >= 0
        keep4 = keep.repeat_interleave(ROTATIONS)
        n, c = labels.shape[0], single.shape[-1]
        agg = joint.view(n, ROTATIONS, c, ROTATIONS).diagonal(dim1=1, dim2=3).mean(-1)  # (B, C)
        t = self.temperature
        sd = F.kl_div((single / t).log_softmax(-1), (agg.detach() / t).softmax(-1), reduction="batchmean") * t**2
        if not bool(keep.any()):
            return sd
        joint_labels = batch.labels.clamp_min(0) * ROTATIONS + rot
        ce_joint = F.cross_entropy(joint[keep4], joint_labels[keep4])
        ce_single = F.cross_entropy(single[keep], labels[keep])
        return ce_joint + ce_single + sd
