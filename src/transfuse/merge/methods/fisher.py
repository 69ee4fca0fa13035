"""Fisher merging (Matena & Raffel, 2022): per-parameter average weighted by diagonal Fisher information.

theta = sum_i w_i F_i theta_i / sum_i w_i F_i, with F_i floored at ``floor`` so parameters no
model is sensitive to fall back to the weighted average. Each model's F_i comes from its
``parameters.statistics`` file, made with :func:`transfuse.merge.stats.fisher_diagonal` (hooks
over a small data set); tensors without Fisher values are averaged with the weights.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import torch
from .._ops import per_model
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("fisher")
class Fisher(MergeMethod):
    """Fisher merging (Matena & Raffel, 2022): sum_i w_i F_i theta_i / sum_i w_i F_i (data-driven)."""

    operates_on = "weights"
    needs_base = False
    data_driven = True
    statistic_shape = staticmethod(lambda shape: tuple(shape))  # one Fisher entry per weight entry

    def __init__(self, *, floor: float = 1e-6, normalize: bool = False) -> None:
        self.floor, self.normalize = floor, normalize

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        rows = ctx.extra["rows"]
        fs = [get(rows) if get is not None else None for get in ctx.extra["statistics"]]
        if any(f is None for f in fs):
            return (x * per_model(w, x)).sum(0) / w.sum()
        F = torch.stack([f.reshape(x.shape[1:]) for f in fs]).clamp(min=self.floor)  # (K, *s)
        if self.normalize:
            F = F / F.reshape(F.shape[0], -1).mean(1).view(-1, *([1] * (F.dim() - 1)))
        Fw = F * per_model(w, x)
        return (Fw * x).sum(0) / Fw.sum(0)
