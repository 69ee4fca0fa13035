"""Magnitude pruning then task arithmetic, as PEFT names it (``peft.utils.merge_utils.magnitude_prune``).

Followed PEFT 0.21.2: each task vector keeps its int(density * n) largest magnitudes of the tensor
(``torch.topk``, so ties fall as PEFT's do), then theta = theta_0 + scale * sum_i w_i tau_i. No sign
election (that is ``ties`` with ``topk="exact"``). The selection needs the whole tensor, so the
tensor is merged in one block.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._ops import weighted_sum
from .._peft import topk_keep_
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("magnitude_prune")
class MagnitudePrune(MergeMethod):
    """PEFT's magnitude_prune: keep each task vector's top int(density * n) |entries| per tensor, weighted sum."""

    per_model_params = ("density",)
    chunkable = False  # the top-k is over the whole tensor

    def __init__(self, *, density: float = 0.2, scale: float = 1.0) -> None:
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"density must be in [0, 1], got {density}")
        self.density, self.scale = density, scale

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        topk_keep_(x, ctx.params["density"])  # (K, *s) pruned in place
        return weighted_sum(x, w, self.scale)
