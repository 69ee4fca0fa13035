"""PCB-Merging (Du et al., 2024): parameter competition balancing.

Followed the official code (github.com/duguodong7/pcb-merging, ``pcb-merging.py``, ``PCB_merge``),
with its whole-model statistics gathered in streaming passes (exact radix selects):
1. |tau| of each task is clamped to its own [1e-4, 1 - 1e-4] order statistics (lo, hi);
2. intra balancing: exp(K * ((|tau|_c - lo) / (hi - lo))^2);
3. inter balancing: tanh(tau * sum_j tau_j);
4. beta = intra * inter, clamped below at each task's (1 - ratio) quantile and min-max
   normalised by task (so only the top ``ratio`` fraction gets a non-zero weight);
5. merged = sum_i w_i beta_i tau_i,c / sum_i beta_i;  theta = theta_0 + scale * merged.
``scale`` is the paper's lambda (1.2 default, the code's starting value before its search).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import torch
from .._ops import RadixSelect, per_model
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("pcb")
class Pcb(MergeMethod):
    """PCB-Merging (Du et al., 2024): intra x inter balancing scores, keep top ratio per task (official code)."""

    passes = 4

    def __init__(self, *, ratio: float = 0.1, scale: float = 1.2, clamp_ratio: float = 1e-4) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        if not 0.0 <= clamp_ratio < 0.5:
            raise ValueError(f"clamp_ratio must be in [0, 0.5), got {clamp_ratio}")
        self.ratio, self.scale, self.clamp_ratio = ratio, scale, clamp_ratio
        self._sel: RadixSelect | None = None
        self.lo = self.hi = self.q = self.mx = None

    def _score(self, x: Tensor) -> Tensor:
        K = x.shape[0]
        lo, hi = per_model(self.lo, x), per_model(self.hi, x)
        a = torch.minimum(torch.maximum(x.abs(), lo), hi)
        intra = torch.exp(K * ((a - lo) / (hi - lo).clamp(min=1e-12)) ** 2)
        inter = torch.tanh(x * x.sum(0))
        return intra * inter  # (K, *s)

    def observe(self, pass_index: int, x: Tensor, w: Tensor, ctx: TensorContext) -> None:
        K = x.shape[0]
        if pass_index in (0, 1):
            v = x.abs().reshape(K, -1)
        else:
            v = self._score(x).reshape(K, -1)
        if pass_index in (0, 2):
            if self._sel is None:
                self._sel = RadixSelect(K, nonneg=pass_index == 0)
            self._sel.add_coarse(v)
        else:
            self._sel.add_fine(v)

    def finish_pass(self, pass_index: int) -> None:
        if self._sel is None:
            return
        d = int(self._sel.count[0])
        K = self._sel.streams
        if pass_index == 0:
            lo_r = int(d * self.clamp_ratio)
            hi_r = max(int(d * (1 - self.clamp_ratio) - 1), lo_r)
            self._sel.set_ranks([[lo_r, hi_r]] * K)
        elif pass_index == 1:
            vals = self._sel.values()
            self.lo, self.hi = vals[:, 0], vals[:, 1]
            self._sel = None
        elif pass_index == 2:
            self._sel.set_ranks([[min(int(d * (1 - self.ratio)), d - 1), d - 1]] * K)
        else:
            vals = self._sel.values()
            self.q, self.mx = vals[:, 0], vals[:, 1]
            self._sel = None

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        assert self.q is not None, "PCB needs its statistics passes first"
        q, mx = per_model(self.q, x), per_model(self.mx, x)
        beta = (torch.maximum(self._score(x), q) - q) / (mx - q).clamp(min=1e-12)  # (K, *s) in [0, 1]
        lo, hi = per_model(self.lo, x), per_model(self.hi, x)
        clamped = torch.sign(x) * torch.minimum(torch.maximum(x.abs(), lo), hi)
        merged = (clamped * beta * per_model(w, x)).sum(0) / beta.sum(0).clamp(min=1e-12)
        return self.scale * merged
