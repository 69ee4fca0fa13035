"""MIX-KD: partial mixup with standard-deviation-normalised logits."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import TransfuseError
from ..signals import Batch, Outputs
from . import Objective, objectives


def _std_normalised(logits: Tensor) -> Tensor:
    """logits / their own std over classes (unbiased, as torch.std). (B, C) -> (B, C)."""
    logits = logits.float()
    return logits / logits.std(dim=-1, keepdim=True).clamp_min(1e-6)


@objectives.register("mixkd")
class MixKD(Objective):
    """Choi et al. 2023, Understanding the Role of Mixup in KD: partial mixup + std-normalised logits; followed hchoi71/MIX-KD helper/loops_mixstd.py (PMU) and distiller_zoo/MIXSTD.py.

    ``prepare`` mixes the batch (teacher and student both see the mixed inputs): two random
    permutations, lambda ~ Beta(beta_a, beta_a) per sample, and a random ``keep_fraction`` of the
    rows (drawn with replacement, as the official code) get lambda = 1. The loss is
    gamma * CE(soft mixed labels, s/std(s)) + alpha * KL(softmax(t/std(t)) || softmax(s/std(s))).
    """
    #: prepare() changes the inputs, so the teacher must run live on them (no logits cache).
    changes_inputs = True

    is_divergence = True

    def __init__(self, *, alpha: float = 0.9, gamma: float = 0.1, keep_fraction: float = 0.9, beta_a: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= keep_fraction <= 1.0:
            raise ValueError("mixkd keep_fraction must be in [0, 1]")
        if beta_a <= 0:
            raise ValueError("mixkd beta_a must be > 0")
        self.alpha, self.gamma, self.keep_fraction, self.beta_a = alpha, gamma, keep_fraction, beta_a

    def prepare(self, batch: Batch, *, generator: torch.Generator) -> Batch:
        n = batch.size
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        p1 = torch.randperm(n, generator=generator)
        p2 = torch.randperm(n, generator=generator)
        lam = torch.from_numpy(rng.beta(self.beta_a, self.beta_a, n)).float()  # (B,)
        lam[torch.randint(0, n, (int(n * self.keep_fraction),), generator=generator)] = 1.0
        shape = (n,) + (1,) * (batch.inputs.dim() - 1)
        lam_x = lam.view(shape).to(batch.inputs.device)
        inputs = lam_x * batch.inputs[p1] + (1 - lam_x) * batch.inputs[p2]
        extra = dict(batch.extra)
        labels = None
        if batch.labels is not None:
            c = int(batch.extra.get("num_classes", 0)) or int(batch.labels.max().clamp_min(0)) + 1
            y1, y2 = batch.labels[p1], batch.labels[p2]
            oh1 = F.one_hot(y1.clamp_min(0), c).float() * (y1 >= 0).unsqueeze(-1)
            oh2 = F.one_hot(y2.clamp_min(0), c).float() * (y2 >= 0).unsqueeze(-1)
            lam_y = lam.to(oh1.device).unsqueeze(-1)
            extra["soft_labels"] = lam_y * oh1 + (1 - lam_y) * oh2  # (B, C), zero rows where unlabelled
            labels = torch.where(lam.to(y1.device) >= 0.5, y1, y2)  # dominant label, for accuracy only
        index = None if batch.index is None else batch.index[p1]
        return Batch(inputs=inputs, labels=labels, index=index, mask=batch.mask, extra=extra)

    def check_num_classes(self, num_classes: int) -> None:
        """Refuse two classes before any work: two logits divided by their std are always +-1/sqrt(2)
        apart from the sign (the official MIXSTDLoss too), so the loss has no gradient and nothing is learnt."""
        if num_classes == 2:
            raise TransfuseError(
                "mixkd divides logits by their std over classes, which with 2 classes leaves only their sign "
                "and no gradient (nothing is learnt); use objective.name=kd for two classes"
            )

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        self.check_num_classes(student.logits.shape[-1])
        s = _std_normalised(student.logits)  # (B, C)
        t = _std_normalised(teacher.logits.detach())
        log_s = s.log_softmax(-1)
        t_logp = t.log_softmax(-1)
        loss = self.alpha * (t_logp.exp() * (t_logp - log_s)).sum(-1).mean()
        soft = batch.extra.get("soft_labels")
        if soft is not None and self.gamma:
            if soft.shape[-1] < s.shape[-1]:
                soft = F.pad(soft, (0, s.shape[-1] - soft.shape[-1]))
            loss = loss + self.gamma * (-(soft * log_s).sum(-1)).sum() / s.shape[0]
        return loss
