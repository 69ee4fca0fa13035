"""Task arithmetic (Ilharco et al., 2023, "Editing models with task arithmetic")."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import kernels
from .._ops import weighted_sum
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("task_arithmetic")
class TaskArithmetic(MergeMethod):
    """Task arithmetic (Ilharco et al., 2023): theta_0 + scale * sum_i w_i tau_i, tau_i = theta_i - theta_0."""

    def __init__(self, *, scale: float = 1.0, normalize: bool = False) -> None:
        self.scale = scale
        self.normalize = normalize

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        out = weighted_sum(x, w, self.scale)  # (*s), in x's scratch memory
        return out.div_(w.sum()) if self.normalize else out

    def fast(self) -> bool:
        return True

    def fast_merge(self, xs, base, out, w, ctx, state) -> None:
        coef = [self.scale * float(v) for v in w]  # as weighted_sum's alphas
        kernels.weighted_merge(xs, base, out, coef, divisor=float(w.sum()) if self.normalize else 1.0)
