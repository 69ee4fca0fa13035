"""Swing distillation: privacy-adaptive temperature and noisy soft targets."""
from __future__ import annotations

import torch
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import cross_entropy, masked_mean, position_mask


@objectives.register("swing")
class SwingDistillation(Objective):
    """Li et al. 2022, Swing Distillation (arXiv 2212.08349): a per-sample/token temperature that rises with a privacy score, plus noise on the soft targets; followed the abstract only (no code found; the formulas below are this library's reading).

    Unverified details, chosen here: the privacy score s in [0, 1] comes from
    ``batch.extra["privacy"]`` ((B,) or (B, T)) when the data provides it, else it is the teacher's
    probability of the gold class (of its top class when unlabelled), i.e. how much the teacher
    has memorised that sample. T_i = t_min + (t_max - t_min) s_i. Soft targets
    q_i = normalise(max(softmax(z_t / T_i) + N(0, noise_std^2), 1e-8)); loss per position
    alpha T_i^2 KL(q_i || softmax(z_s / T_i)) + (1 - alpha) CE. The noise comes from a generator
    seeded by (seed, call count); the count is a buffer, so resumed runs draw the same noise.
    """

    supports_tokens = True

    def __init__(self, *, t_min: float = 4.0, t_max: float = 16.0, noise_std: float = 0.05, alpha: float = 0.9, seed: int = 0) -> None:
        super().__init__()
        if not 0 < t_min <= t_max:
            raise ValueError("swing needs 0 < t_min <= t_max")
        if noise_std < 0:
            raise ValueError("swing noise_std must be >= 0")
        self.t_min, self.t_max, self.noise_std, self.alpha, self.seed = t_min, t_max, noise_std, alpha, seed
        self.register_buffer("calls", torch.tensor(0, dtype=torch.long))

    def privacy_score(self, teacher_logits: Tensor, batch: Batch) -> Tensor:
        given = batch.extra.get("privacy")
        if given is not None:
            return given.float().clamp(0, 1)
        probs = teacher_logits.float().softmax(-1)
        gold = probs.argmax(-1)
        if batch.labels is not None and batch.labels.shape == gold.shape:
            gold = torch.where(batch.labels >= 0, batch.labels, gold)
        return probs.gather(-1, gold.unsqueeze(-1)).squeeze(-1)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        t_logits = teacher.logits.detach().float()
        score = self.privacy_score(t_logits, batch)  # (...,)
        temp = (self.t_min + (self.t_max - self.t_min) * score).unsqueeze(-1)  # (..., 1)
        q = (t_logits / temp).softmax(-1)
        if self.noise_std > 0:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.calls))
            noise = torch.randn(q.shape, generator=g).to(q.device) * self.noise_std
            q = (q + noise).clamp_min(1e-8)
            q = q / q.sum(-1, keepdim=True)
        self.calls += 1
        log_s = (student.logits.float() / temp).log_softmax(-1)
        per_position = (q * (q.log() - log_s)).sum(-1) * temp.squeeze(-1) ** 2
        soft = masked_mean(per_position, position_mask(batch.mask, per_position))
        if self.alpha == 1.0 or batch.labels is None:
            return soft
        return self.alpha * soft + (1 - self.alpha) * cross_entropy(student.logits, batch.labels)
