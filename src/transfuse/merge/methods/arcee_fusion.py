"""Arcee Fusion (Arcee AI, 2025; mergekit 0.1.5 ``arcee_fusion``): keep the expert's change only where
it matters. importance = |tau| * KL(softmax(theta_1) || softmax(theta_0)) over the last dimension;
entries at or above median + 1.5 IQR of the importances keep the change, the rest take the base.
The quantiles are of the sorted importances (exact up to 10^6 entries; above that mergekit samples
10^6 at random, here the sample is drawn from the tensor's seeded generator)."""
from __future__ import annotations

from ..._lazy import torch
from . import define

_SAMPLE = 1_000_000


@define("arcee_fusion", models=1)
def arcee_fusion(x, w, ctx):
    """Arcee Fusion (mergekit): the change is kept where |tau| * KL exceeds median + 1.5 IQR."""
    base = ctx.base
    d = x[0]
    params = base + d
    p = torch.softmax(params, dim=-1) + 1e-8
    q = torch.softmax(base, dim=-1) + 1e-8
    imp = d.abs() * torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)  # (*s)
    flat = imp.reshape(-1)
    if flat.numel() > _SAMPLE:
        flat = flat[torch.randint(flat.numel(), (_SAMPLE,), generator=ctx.generator)]
    s = torch.sort(flat).values
    idx = (torch.tensor([0.25, 0.5, 0.75]) * (s.numel() - 1)).long()
    q1, med, q3 = s[idx]
    return d * (imp >= med + 1.5 * (q3 - q1)).to(d.dtype)
