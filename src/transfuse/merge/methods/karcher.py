"""Karcher mean (Karcher, 1977; mergekit 0.1.5 ``karcher``): the Riemannian mean of the models'
unit tensors on the hypersphere by fixed-point iteration (at most ``max_iter`` steps, stopping when
the tangent step is below ``tol``), scaled by the mean norm. Every model has the same weight and a
base listed under models is one of them (as mergekit)."""
from __future__ import annotations

from ..._lazy import torch
from . import define


@define("karcher", operates_on="weights", needs_base=False, base_role="member")
def karcher(x, w, ctx, *, max_iter: int = 10, tol: float = 1e-5):
    """Karcher mean (mergekit): iterated spherical mean of the unit tensors, times the mean norm."""
    K = x.shape[0]
    if K == 1:
        return x[0]
    alphas = [1.0 / K] * K
    norms = [float(torch.linalg.vector_norm(x[k])) for k in range(K)]
    units = [x[k] / norms[k] if norms[k] != 0.0 else torch.zeros_like(x[k]) for k in range(K)]
    valid = [k for k in range(K) if norms[k] > tol]
    if not valid:
        return torch.zeros_like(x[0])
    a = [alphas[k] / sum(alphas[j] for j in valid) for k in valid]
    us = [units[k] for k in valid]
    mean = sum(ai * ui for ai, ui in zip(a, us))
    mn = float(torch.linalg.vector_norm(mean))
    mean = us[0].clone() if mn < tol else mean / mn
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for ai, ui in zip(a, us):
            dot = torch.clamp(torch.dot(mean.flatten(), ui.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += ai * (theta / torch.sin(theta)) * (ui - dot * mean)
        tn = torch.linalg.vector_norm(tangent)
        if float(tn) < tol:
            break
        mean = torch.cos(tn) * mean + torch.sin(tn) * (tangent / tn)
        un = torch.linalg.vector_norm(mean)
        if float(un) > tol:
            mean = mean / un
    return sum(al * n for al, n in zip(alphas, norms)) * mean
