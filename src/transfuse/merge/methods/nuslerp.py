"""NuSLERP (mergekit 0.1.5 ``nuslerp``): SLERP of two models with t = w_1 / (w_0 + w_1), over the
flattened tensor (``flatten``), its rows (``row_wise``) or its columns; with a base, the two task
vectors are interpolated and added to the base (task-vector SLERP)."""
from __future__ import annotations

from ..._lazy import torch
from . import define


def nuslerp_vectors(t: float, v0, v1, *, row_wise: bool, flatten: bool, eps: float = 1e-8):
    """mergekit ``nuslerp``: (*s), (*s) -> (*s); nearly colinear pairs interpolate linearly."""
    shape = v0.shape
    dim = 0 if row_wise else -1
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps ** 2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    out = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, out)
    if dim != -1 and not flatten:
        out = out.transpose(dim, -1)
    return out.reshape(shape)


@define("nuslerp", operates_on="weights", needs_base=False, models=2)
def nuslerp(x, w, ctx, *, nuslerp_row_wise: bool = False, nuslerp_flatten: bool = True):
    """NuSLERP (mergekit): SLERP with t = w_1 / (w_0 + w_1), of the models or, given a base, of their task vectors."""
    total = float(w.sum())
    t = 0.5 if abs(total) < 1e-6 else float(w[1]) / total
    base = ctx.base
    if base is None:
        return nuslerp_vectors(t, x[0], x[1], row_wise=nuslerp_row_wise, flatten=nuslerp_flatten)
    return base + nuslerp_vectors(t, x[0] - base, x[1] - base, row_wise=nuslerp_row_wise, flatten=nuslerp_flatten)
