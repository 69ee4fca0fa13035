"""The instance-wise term of Streamlined Knowledge Distillation (SKD; Jeong et al., CVPR 2026)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import kl_from_logprobs, log_softmax
from ._rows import logit_rows


@objectives.register("skd_instance")
class SkdInstance(Objective):
    """SKD instance term (Jeong et al. 2026): KL(p_t^T || p_s^T) per sample.

    ``mode="paper"``: Eq. (1), the batch mean of the KL. ``mode="code"``: the authors' SKD.py (as
    torchdistill's SKDInstanceLoss): T^2 KL, counted only on samples whose teacher confidence
    (max softmax at T=1) is at most the batch median, averaged over the whole batch.
    """

    is_divergence = True

    def __init__(self, *, temperature: float = 4.0, mode: str = "paper") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("skd_instance temperature must be > 0")
        if mode not in ("paper", "code"):
            raise ValueError(f"skd_instance mode must be 'paper' or 'code', got {mode!r}")
        self.temperature, self.mode = temperature, mode

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = logit_rows(student, teacher, batch)  # (N, C)
        per_sample = kl_from_logprobs(log_softmax(t, self.temperature), log_softmax(s, self.temperature))  # (N,)
        if self.mode == "paper":
            return per_sample.mean()
        confidence = t.softmax(1).max(1).values  # (N,)
        keep = (confidence <= torch.quantile(confidence, 0.5)).to(per_sample.dtype)
        return (per_sample * self.temperature**2 * keep).mean()
