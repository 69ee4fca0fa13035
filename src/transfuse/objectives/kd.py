"""Hinton knowledge distillation."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import cross_entropy, kl_from_logprobs, set_token_options, token_pair, token_reduce


@objectives.register("kd")
class KnowledgeDistillation(Objective):
    """Hinton et al. 2015: alpha T^2 KL(p_t^T || p_s^T) + (1 - alpha) CE(y) on labelled samples.

    Unlabelled samples (label -1) contribute only the KL term. T^2 is applied unless
    ``t_squared=False`` (torchdistill's KDLoss drops it when there is no CE term), so the gradient
    scale does not jump with alpha. ``kl_weight`` / ``ce_weight``, when given, replace alpha and
    1 - alpha independently (torchdistill's ``beta`` / ``alpha``: KDLoss(alpha=a, beta=b) is
    ``kd(ce_weight=a, kl_weight=b)``); ``label_smoothing`` smooths the CE term. Accepts dense
    teacher logits or a sparse top-k teacher (``pair_logprobs``); ``reduction`` / ``support`` /
    ``top_k`` / ``tail`` as ``forward_kl``.
    """

    def __init__(self, *, temperature: float = 4.0, alpha: float = 0.9, kl_weight: Optional[float] = None,
                 ce_weight: Optional[float] = None, label_smoothing: float = 0.0, t_squared: bool = True,
                 reduction: str = "token_mean", support: str = "auto", top_k: int = 0, tail: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("kd temperature must be > 0")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("kd alpha must be in [0, 1]")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError("kd label_smoothing must be in [0, 1)")
        self.temperature = temperature
        self.alpha = alpha
        self.kl_weight = alpha if kl_weight is None else float(kl_weight)
        self.ce_weight = 1.0 - alpha if ce_weight is None else float(ce_weight)
        self.label_smoothing = label_smoothing
        set_token_options(self, "kd", reduction=reduction, t_squared=t_squared, support=support, top_k=top_k, tail=tail)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = token_pair(self, student, teacher)  # dense (..., C) or a sparse support (..., S)
        soft = token_reduce(self, kl_from_logprobs(t, s), batch, s.shape[-1])  # per position (B,) or (B, T)
        if batch.labels is None:  # no labels: the soft term alone, unweighted (as before the weights existed)
            return soft
        if self.ce_weight == 0.0:
            return self.kl_weight * soft
        return self.kl_weight * soft + self.ce_weight * cross_entropy(student.logits, batch.labels, self.label_smoothing)
