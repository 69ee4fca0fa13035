"""Task arithmetic (Ilharco et al., 2023, "Editing models with task arithmetic")."""
from __future__ import annotations

from torch import Tensor

from .._ops import weighted_sum
from . import MergeMethod, TensorContext, methods


@methods.register("task_arithmetic")
class TaskArithmetic(MergeMethod):
    """Task arithmetic (Ilharco et al., 2023): theta_0 + scale * sum_i w_i tau_i, tau_i = theta_i - theta_0."""

    def __init__(self, *, scale: float = 1.0, normalize: bool = False) -> None:
        self.scale = scale
        self.normalize = normalize

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        out = weighted_sum(x, w, self.scale)  # (*s), in x's scratch memory
        return out.div_(w.sum()) if self.normalize else out
