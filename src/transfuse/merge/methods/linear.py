"""Linear: weighted average of the models' weights (Wortsman et al. 2022, model soups; mergekit ``linear``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .. import kernels
from .._ops import weighted_sum
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("linear")
class Linear(MergeMethod):
    """Linear / model soup (Wortsman et al., 2022): sum_i w_i theta_i, divided by sum_i w_i when normalize."""

    operates_on = "weights"
    needs_base = False

    def __init__(self, *, normalize: bool = True) -> None:
        self.normalize = normalize

    def weight_problem(self, weights: list) -> Optional[str]:
        if self.normalize and sum(weights) == 0:
            return "the weights sum to 0 and normalize divides by their sum; change the weights or set normalize: false"
        return None

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        out = weighted_sum(x, w)  # (*s), in x's scratch memory
        return out.div_(w.sum()) if self.normalize else out

    def fast(self) -> bool:
        return True

    def fast_merge(self, xs, base, out, w, ctx, state) -> None:
        kernels.weighted_merge(xs, None, out, w, divisor=float(w.sum()) if self.normalize else 1.0)
