"""Progressive self-knowledge distillation (PS-KD)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives


@objectives.register("pskd")
class ProgressiveSelfKD(Objective):
    """Kim et al. 2021, Self-Knowledge Distillation with Progressive Refinement of Targets: target = (1 - a_t) y + a_t p_prev, a_t = alpha_T (t+1)/E; followed lgcnsai/PS-KD-Pytorch main.py and loss/pskd_loss.py.

    p_prev is the student's own softmax for that sample the last time it was seen (one-hot
    before that), kept per sample id (``batch.index``) in a buffer that grows as ids appear, so
    checkpoints carry it. t is the 0-based epoch now running, E the number of epochs. Unlabelled
    samples are skipped. No teacher.
    """

    needs_teacher = False

    def __init__(self, *, alpha_T: float = 0.8) -> None:
        super().__init__()
        if not 0.0 <= alpha_T <= 1.0:
            raise ValueError("pskd alpha_T must be in [0, 1]")
        self.alpha_T = alpha_T
        self.register_buffer("predictions", torch.zeros(0, 0))  # (N, C) last softmax per sample id
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool))  # (N,)
        self.register_buffer("epoch", torch.tensor(0))  # epochs finished
        self.register_buffer("epochs", torch.tensor(0))

    def alpha_t(self) -> float:
        if int(self.epochs) == 0:
            return 0.0
        return self.alpha_T * (int(self.epoch) + 1) / int(self.epochs)

    def _grow(self, n: int, c: int, device: torch.device) -> None:
        if self.predictions.shape[0] >= n and self.predictions.shape[1] == c:
            return
        old_n = self.predictions.shape[0]
        preds = torch.zeros(max(n, old_n), c, device=device)
        seen = torch.zeros(max(n, old_n), dtype=torch.bool, device=device)
        if old_n and self.predictions.shape[1] == c:
            preds[:old_n] = self.predictions
            seen[:old_n] = self.seen
        self.predictions, self.seen = preds, seen

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("predictions", "seen"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        if batch.index is None:
            raise ValueError("pskd needs sample ids (batch.index) to keep each sample's last prediction")
        logits = student.logits.float()  # (B, C)
        keep = batch.labels >= 0
        if not bool(keep.any()):
            return logits.sum() * 0.0
        logits, labels, index = logits[keep], batch.labels[keep], batch.index[keep].long()
        self._grow(int(index.max()) + 1, logits.shape[-1], logits.device)
        one_hot = F.one_hot(labels, logits.shape[-1]).float()
        prev = torch.where(self.seen[index].unsqueeze(-1), self.predictions[index], one_hot)
        a = self.alpha_t()
        target = (1 - a) * one_hot + a * prev
        log_p = logits.log_softmax(-1)
        self.predictions[index] = log_p.detach().exp()
        self.seen[index] = True
        return -(target * log_p).sum(-1).mean()

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        self.epoch.fill_(epoch)
        self.epochs.fill_(epochs)
