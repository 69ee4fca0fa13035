"""KL distillation with data partitioning (KL+DP) between any two pretrained models."""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import Tensor, nn

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import kl_from_logprobs, log_softmax, masked_mean, position_mask


@objectives.register("kldp")
class KLDataPartition(Objective):
    """Roth et al. 2024, Fantastic Gains and Where to Find Them (KL+DP transfer): per sample, KL to the teacher where it is more confident on the true class than the frozen initial student, else KL to that initial student; followed the paper (its code was not found by the search tools).

    ``bind(student)`` keeps a frozen copy of the student as it is before transfer; it is a
    submodule, so checkpoints carry it. Unlabelled samples use the teacher's top class as the
    true class. Loss per sample: T^2 KL(p_target^T || p_s^T), T = ``temperature``.
    """

    is_divergence = True
    supports_tokens = True

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError("kldp temperature must be > 0")
        self.temperature = temperature
        self.initial: Optional[nn.Module] = None
        self.register_buffer("teacher_share", torch.tensor(0.0))  # fraction of samples sent to the teacher (last batch)

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        if self.initial is None:
            self.initial = copy.deepcopy(student).eval()
            for p in self.initial.parameters():
                p.requires_grad_(False)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if self.initial is None:
            raise RuntimeError("kldp needs bind(student) before training: it keeps a frozen copy of the initial student")
        self.initial.eval()
        kwargs = {"attention_mask": batch.extra["attention_mask"]} if "attention_mask" in batch.extra else {}
        with torch.no_grad():
            raw = self.initial(batch.inputs, **kwargs)
        init_logits = (raw if isinstance(raw, Tensor) else raw.logits).detach()
        t_logits = teacher.logits.detach()
        gold = t_logits.argmax(-1)
        if batch.labels is not None and batch.labels.shape == gold.shape:
            gold = torch.where(batch.labels >= 0, batch.labels, gold)
        conf_t = t_logits.float().softmax(-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1)
        conf_0 = init_logits.float().softmax(-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1)
        use_teacher = (conf_t > conf_0).unsqueeze(-1)  # (..., 1)
        target = torch.where(use_teacher, t_logits.float(), init_logits.float())
        per_position = kl_from_logprobs(log_softmax(target, self.temperature), log_softmax(student.logits, self.temperature))
        keep = position_mask(batch.mask, per_position)
        self.teacher_share.fill_(float(masked_mean(use_teacher.squeeze(-1).float(), keep)))
        return masked_mean(per_position, keep) * self.temperature**2
