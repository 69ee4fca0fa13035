"""Adam for an objective's own learned parts, with its moments in buffers so checkpoints carry them.

HARD's augmentor, the data-free generator and TGeo-KD's ratio network are trained by their
objective, not by the loop's optimizer. Keeping Adam's state as buffers (tensors, so the
safetensors checkpoints hold them) makes a resumed run step exactly like an uninterrupted one.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn


class BufferAdam(nn.Module):
    """Adam (Kingma & Ba 2015, bias-corrected, no weight decay) over ``params`` given at each step."""

    def __init__(self, *, lr: float, betas: tuple = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__()
        self.lr, self.betas, self.eps = lr, betas, eps
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    def _moment(self, name: str, like: Tensor) -> Tensor:
        if not hasattr(self, name) or getattr(self, name).shape != like.shape:
            self.register_buffer(name, torch.zeros_like(like))
        return getattr(self, name)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key, value in state_dict.items():
            if key.startswith(prefix) and key[len(prefix):].startswith(("m_", "v_")):
                self.register_buffer(key[len(prefix):], torch.empty_like(value))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def step(self, params: Sequence[nn.Parameter], grads: Sequence[Optional[Tensor]]) -> None:
        self.steps += 1
        t = int(self.steps)
        b1, b2 = self.betas
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            m, v = self._moment(f"m_{i}", p), self._moment(f"v_{i}", p)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1**t))


def step_parts(adam: BufferAdam, params: List[nn.Parameter], loss: Tensor) -> None:
    """One Adam step of ``params`` on ``loss``; gradients go to ``params`` only (never to the models)."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    adam.step(params, [None if g is None else g.detach() for g in grads])
