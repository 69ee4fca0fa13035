"""The direction-wise term of Streamlined Knowledge Distillation (SKD; Jeong et al., CVPR 2026)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._rows import logit_rows


@objectives.register("skd_direction")
class SkdDirection(Objective):
    """SKD direction term (Jeong et al. 2026): Mahalanobis distance between the Gram matrices of L2-normalised logits.

    D = G_s - G_t (N, N), G = normalise(z) normalise(z)^T; Sigma' = cov(D) + tikhonov I; the loss is
    the mean over rows of sqrt(D_i Sigma'^-1 D_i^T). ``mode="paper"``: Eqs. (3)-(8). ``mode="code"``:
    the authors' SKD.py (as torchdistill's SKDDirectionLoss): Gram matrices divided by the number
    of classes C, and the loss times the fraction of classes whose batch-summed teacher confidence
    is at most the median.
    """

    is_divergence = True

    def __init__(self, *, tikhonov: float = 0.1, mode: str = "paper") -> None:
        super().__init__()
        if tikhonov <= 0:
            raise ValueError("skd_direction tikhonov must be > 0 (it keeps the covariance invertible)")
        if mode not in ("paper", "code"):
            raise ValueError(f"skd_direction mode must be 'paper' or 'code', got {mode!r}")
        self.tikhonov, self.mode = tikhonov, mode

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = logit_rows(student, teacher, batch)  # (N, C)
        scale = float(s.shape[1]) if self.mode == "code" else 1.0
        gs, gt = F.normalize(s, p=2, dim=1), F.normalize(t, p=2, dim=1)  # (N, C)
        diff = (gs @ gs.t() - gt @ gt.t()) / scale  # (N, N)
        cov = torch.cov(diff.t()) + self.tikhonov * torch.eye(diff.shape[1], dtype=diff.dtype)  # (N, N)
        inv = torch.cholesky_inverse(torch.linalg.cholesky(cov))
        loss = torch.einsum("bi,ij,bj->b", diff, inv, diff).clamp_min(0.0).sqrt().mean()  # clamp: rounding below 0
        if self.mode == "paper":
            return loss
        class_conf = t.softmax(1).sum(0)  # (C,)
        return loss * (class_conf <= torch.quantile(class_conf, 0.5)).to(loss.dtype).mean()
