"""SLERP: spherical linear interpolation of two models per tensor (Shoemake, 1985; mergekit ``slerp``).

The angle is taken between the two tensors normalised to unit length (flattened, whole tensor);
the unnormalised tensors are interpolated: sin((1-t) W)/sin W * v0 + sin(t W)/sin W * v1. Nearly
colinear tensors (|cos| > 0.9995, mergekit's threshold) fall back to linear interpolation.
``t`` is the weight of the second model; set it per tensor with overrides or a gradient list. With
``base_model``, the base is the first model (t = 0 gives it), as mergekit does.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor

_DOT_THRESHOLD = 0.9995


@methods.register("slerp")
class Slerp(MergeMethod):
    """SLERP between exactly two models (mergekit semantics): t = 0 gives the first, t = 1 the second."""

    operates_on = "weights"
    needs_base = False
    models_required = 2
    base_role = "member"  # given base_model, it is the first model (t = 0), listed under models or not (mergekit)
    tensor_passes = 1

    def __init__(self, *, t: float = 0.5) -> None:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t}")
        self.t = t

    def observe_tensor(self, pass_index, x, w, ctx, state) -> None:
        v = x.reshape(2, -1).double()
        state["dot"] = state.get("dot", 0.0) + float((v[0] * v[1]).sum())
        state["n0"] = state.get("n0", 0.0) + float((v[0] * v[0]).sum())
        state["n1"] = state.get("n1", 0.0) + float((v[1] * v[1]).sum())

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        s = ctx.extra["state"]
        t = self.t
        denom = math.sqrt(s["n0"]) * math.sqrt(s["n1"])
        cos = s["dot"] / denom if denom > 0 else 1.0
        if abs(cos) > _DOT_THRESHOLD:
            return (1 - t) * x[0] + t * x[1]
        omega = math.acos(max(-1.0, min(1.0, cos)))
        so = math.sin(omega)
        return (math.sin((1 - t) * omega) / so) * x[0] + (math.sin(t * omega) / so) * x[1]
