"""Multi-SLERP (Goddard, 2025; mergekit 0.1.5 ``multislerp``): barycentric interpolation on the
hypersphere. Unit tensors (flattened) are projected to the tangent space at their weighted mean
direction, averaged there, mapped back by the exponential map and scaled by the weighted mean
norm; with a base, the task vectors are interpolated and the base added back."""
from __future__ import annotations

from ..._lazy import torch
from ...errors import TransfuseError
from . import define


@define("multislerp", operates_on="weights", needs_base=False)
def multislerp(x, w, ctx, *, normalize_weights: bool = True, eps: float = 1e-8):
    """Multi-SLERP (mergekit): weighted spherical mean of the models or of their task vectors around a base."""
    K = x.shape[0]
    if K == 1:
        return x[0]
    base = ctx.base
    v = x - base if base is not None else x  # (K, *s)
    flat = v.reshape(K, -1)
    wk = w.to(v.dtype)
    if normalize_weights:
        wk = wk / wk.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)  # (K, 1)
    unit = flat / (norms + eps)
    mean = (unit * wk.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if K == 2:
            out = (v[0] * wk[0] + v[1] * wk[1])
            return out + base if base is not None else out
        raise TransfuseError(f"multislerp: the weighted mean direction of {ctx.name} is zero (antipodal inputs); change the weights")
    mean = mean / mean_norm
    tangent = unit - (unit * mean).sum(-1, keepdim=True) * mean  # (K, n)
    tr = (tangent * wk.view(-1, 1)).sum(0)
    tn = torch.norm(tr) + eps
    out = (mean * torch.cos(tn) + tr * (torch.sin(tn) / tn)) * (norms.squeeze(-1) * wk).sum()
    out = out.view(v.shape[1:])
    return out + base if base is not None else out
