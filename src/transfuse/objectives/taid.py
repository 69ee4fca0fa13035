"""TAID: temporally adaptive interpolated distillation."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..signals import Batch, Outputs
from . import Objective, objectives
from ._functional import masked_mean, pair_logprobs, position_mask


@objectives.register("taid")
class TAID(Objective):
    """TAID (Shing et al., ICLR 2025), following github.com/SakanaAI/TAID src/distil_losses/taid.py.

    Target p = softmax((1 - t) stopgrad(log p_s) + t log p_t) per token; the loss is the
    cross-entropy -sum p log p_s (as the official code; its gradient is that of KL(p || p_s)),
    masked mean over counted tokens. t starts at ``t_start`` and after each optimizer step
    (``on_step_end``) moves to min(t_end, max(linear ramp, t + alpha sigmoid(m) (1 - t))),
    where m = beta m + (1 - beta) (J_prev - J) / J_prev is the momentum of the loss's relative
    change; ``adaptive=False`` keeps the linear ramp only. t, m and J_prev are buffers, so a
    checkpoint carries them. For short runs scale alpha up (it is per step). With a sparse
    top-k teacher the interpolation runs on the K + 1 buckets of ``pair_logprobs``.
    """

    supports_tokens = True

    def __init__(
        self,
        *,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
        adaptive: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= t_start < 1.0:
            raise ValueError("taid t_start must be in [0, 1)")
        if not t_start < t_end <= 1.0:
            raise ValueError("taid t_end must be in (t_start, 1]")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("taid alpha must be in [0, 1]")
        if not 0.0 <= beta < 1.0:
            raise ValueError("taid beta must be in [0, 1)")
        self.t_start, self.t_end, self.alpha, self.beta, self.adaptive = t_start, t_end, alpha, beta, adaptive
        self.register_buffer("t", torch.tensor(t_start, dtype=torch.float32))
        self.register_buffer("prev_loss", torch.tensor(float("inf"), dtype=torch.float32))
        self.register_buffer("momentum", torch.zeros((), dtype=torch.float32))

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        s, t = pair_logprobs(student, teacher)  # (B, [T,] V or K+1)
        w = self.t.to(s.device)
        target = torch.softmax((1.0 - w) * s.detach() + w * t, dim=-1)  # (B, [T,] V or K+1)
        per_position = -(target * s).sum(-1)  # (B,) or (B, T)
        return masked_mean(per_position, position_mask(batch.mask, per_position))

    @torch.no_grad()
    def on_step_end(self, *, step: int, total_steps: int, loss: float) -> None:
        """Update t from the step's loss; ``step`` counts the optimizer steps done so far."""
        loss = float(loss)
        if not math.isfinite(loss):
            return
        if math.isinf(float(self.prev_loss)):
            self.prev_loss.fill_(loss)
            return
        prev = float(self.prev_loss)
        relative_change = (prev - loss) / (prev + 1e-15)
        m = self.beta * float(self.momentum) + (1.0 - self.beta) * relative_change
        progress = min(1.0, step / max(1, total_steps))
        ramp = self.t_start + (self.t_end - self.t_start) * progress
        t = float(self.t)
        if self.adaptive:
            sig = 1.0 / (1.0 + math.exp(-m))
            new_t = min(self.t_end, max(ramp, t + self.alpha * sig * (1.0 - t)))
        else:
            new_t = ramp
        self.momentum.fill_(m)
        self.t.fill_(new_t)
        self.prev_loss.fill_(loss)
