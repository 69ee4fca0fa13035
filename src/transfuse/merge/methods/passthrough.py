"""Passthrough (mergekit 0.1.5 ``passthrough``): one input's tensor as is, times its ``scale`` when given.
With ``slices:`` this builds frankenmerges (layers stacked from several models)."""
from __future__ import annotations

from . import define


@define("passthrough", operates_on="weights", needs_base=False, models=1, per_model=("scale",), whole_tensor=False,
        base_role="member")
def passthrough(x, w, ctx, *, scale: float = 1.0):
    """Passthrough (mergekit): the one model's tensor, optionally scaled."""
    s = ctx.params["scale"][0]
    return x[0] if s == 1.0 else x[0] * s
