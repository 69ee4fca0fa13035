"""DIST: knowledge distillation from a stronger teacher by correlation (Huang et al., NeurIPS 2022)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._rows import logit_rows


def _pearson_loss(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """1 - mean over rows of the Pearson correlation of a's and b's rows. (N, C) -> ()."""
    return 1.0 - F.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), dim=1, eps=eps).mean()


@objectives.register("dist")
class Dist(Objective):
    """DIST (Huang et al. 2022): tau^2 (beta inter-class + gamma intra-class) Pearson-correlation losses.

    Followed the authors' ``dist_kd.py`` (as torchdistill's DISTLoss): p = softmax(z / tau); the
    inter-class term correlates each sample's class distribution (rows), the intra-class term
    each class's distribution over the batch (columns). Token logits use the counted tokens as rows.
    """

    def __init__(self, *, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0, eps: float = 1e-8) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError("dist tau must be > 0")
        self.beta, self.gamma, self.tau, self.eps = beta, gamma, tau, eps

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = logit_rows(student, teacher, batch)  # (N, C)
        ps, pt = (s / self.tau).softmax(1), (t / self.tau).softmax(1)  # (N, C)
        inter = _pearson_loss(ps, pt, self.eps)
        intra = _pearson_loss(ps.t(), pt.t(), self.eps)  # (C, N)
        return self.tau**2 * (self.beta * inter + self.gamma * intra)
