"""KD on standardised logits (Sun et al., CVPR 2024, "Logit Standardization in Knowledge Distillation")."""
from __future__ import annotations

from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import cross_entropy, kl_from_logprobs, log_softmax, masked_mean, position_mask


def _standardise(z: Tensor, eps: float) -> Tensor:
    """(z - mean) / (eps + std) over the class axis (std unbiased, as the authors' code). (..., C)."""
    z = z.float()
    return (z - z.mean(-1, keepdim=True)) / (eps + z.std(-1, keepdim=True))


@objectives.register("logit_std")
class LogitStd(Objective):
    """Logit standardisation KD (Sun et al. 2024): kl_weight T^2 KL(p_t || p_s) on z-scored logits + ce_weight CE.

    Followed the authors' code and torchdistill's LogitStdKDLoss: both models' logits are
    z-scored per sample before the temperature; the CE term uses the raw student logits.
    torchdistill's LogitStdKDLoss(alpha=a, beta=b) is ``logit_std(ce_weight=a, kl_weight=b)``; with
    no CE term it drops T^2, which is ``t_squared=False`` here.
    """

    is_divergence = True
    supports_tokens = True

    def __init__(self, *, temperature: float = 2.0, eps: float = 1e-7, kl_weight: float = 1.0, ce_weight: float = 0.0,
                 label_smoothing: float = 0.0, t_squared: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("logit_std temperature must be > 0")
        self.temperature, self.eps = temperature, eps
        self.kl_weight, self.ce_weight, self.label_smoothing, self.t_squared = kl_weight, ce_weight, label_smoothing, t_squared

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if teacher.logits is None:
            raise ValueError("logit_std needs the teacher's full logits (z-scoring needs every class)")
        s = log_softmax(_standardise(student.logits, self.eps), self.temperature)  # (..., C)
        t = log_softmax(_standardise(teacher.logits.detach()[..., : s.shape[-1]], self.eps), self.temperature)
        per_position = kl_from_logprobs(t, s)  # (B,) or (B, T)
        soft = masked_mean(per_position, position_mask(batch.mask, per_position))
        soft = self.kl_weight * (soft * self.temperature**2 if self.t_squared else soft)
        if self.ce_weight == 0.0 or batch.labels is None:
            return soft
        return soft + self.ce_weight * cross_entropy(student.logits, batch.labels, self.label_smoothing)
