"""Model Breadcrumbs (Davari & Belilovsky, 2024): mask the smallest AND the largest entries per layer.

Per tensor and model, entries are ranked by magnitude; the top ``gamma`` fraction (outliers) is
dropped and the next ``density`` fraction kept (mergekit's parametrisation of the paper's two
percentiles); the masked task vectors are summed with weights (task arithmetic) times ``scale``,
or, with ``sign="ties"``, sign-elected and averaged as TIES (mergekit ``breadcrumbs_ties``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._ops import disjoint_merge, elect_sign, per_model, tensor_magnitude_stats, tensor_magnitude_values
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


def _ranks(n: int, density: float, gamma: float) -> list:
    top = int(n * gamma)
    kept = int(n * density)
    hi = max(n - top - 1, 0)
    lo = min(max(n - top - kept, 0), hi)
    return [lo, hi]


@methods.register("breadcrumbs")
class Breadcrumbs(MergeMethod):
    """Model Breadcrumbs (Davari & Belilovsky, 2024): drop the top-gamma outliers and the small tail per tensor."""

    per_model_params = ("density",)
    tensor_passes = 2

    def __init__(self, *, density: float = 0.9, gamma: float = 0.01, scale: float = 1.0, sign: str = "none") -> None:
        if not 0.0 < density <= 1.0 or not 0.0 <= gamma < 1.0 or density + gamma > 1.0:
            raise ValueError(f"need 0 < density <= 1, 0 <= gamma < 1, density + gamma <= 1; got {density}, {gamma}")
        if sign not in ("none", "ties"):
            raise ValueError(f"sign must be 'none' or 'ties', got {sign!r}")
        self.density, self.gamma, self.scale, self.sign = density, gamma, scale, sign

    def observe_tensor(self, pass_index, x, w, ctx, state) -> None:
        dens = ctx.params["density"]
        tensor_magnitude_stats(pass_index, x, ctx.extra["rows"], state, lambda n, k: _ranks(n, dens[k], self.gamma))

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        dens = ctx.params["density"]
        q = tensor_magnitude_values(x, ctx.extra.setdefault("state", {}), lambda n, k: _ranks(n, dens[k], self.gamma))
        a = x.abs()
        keep = (a >= per_model(q[:, 0], x)) & (a <= per_model(q[:, 1], x))
        d = x * keep
        if self.sign == "ties":
            return self.scale * disjoint_merge(d, w, elect_sign(d), normalize="count")
        return self.scale * (d * per_model(w, x)).sum(0)
