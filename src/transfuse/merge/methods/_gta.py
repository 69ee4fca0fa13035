"""mergekit's generalized task arithmetic, the shared math of its delta methods (mergekit 0.1.5
``generalized_task_arithmetic.py`` and ``sparsify.py``, followed line by line).

Per model: delta -> sparsify (magnitude top-k, Bernoulli drop, breadcrumbs' outlier band or
DELLA's rank-scaled drop) with an optional L1 rescale -> times its weight; then, with ``sign``
"ties", the sign of the weighted sum is elected and disagreeing entries masked; the sum is
divided by the agreeing weights (or the weights' sum) when ``normalize``, times ``scale``
(mergekit's ``lambda``). The Bernoulli draws are transfuse's counter-based ones
(``TensorContext.random_keep``): the same statistics as mergekit's ``torch.bernoulli``, not
the same entries.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..._lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

    from . import TensorContext


def check(*, sign: str = "ties", **_: object) -> None:
    if sign not in ("ties", "none"):
        raise ValueError(f"sign must be 'ties' (elect signs, mergekit *_ties) or 'none' (sum, mergekit *_linear), got {sign!r}")


def check_magprune(*, density: float = 1.0, epsilon: float = 0.15, sign: str = "ties", **_: object) -> None:
    """mergekit's MagPrune band: density +/- epsilon inside (0, 1) whenever it prunes (0 < density < 1);
    mergekit raises this mid-merge, transfuse before any work."""
    check(sign=sign)
    if 0 < density < 1 and (density + epsilon >= 1 or density - epsilon <= 0):
        raise ValueError(f"epsilon {epsilon} must keep density +/- epsilon inside (0, 1) (density {density})")


def _rescaled(delta: Tensor, mask: Tensor, rescale: bool, eps: float = 1e-7) -> Tensor:
    """mergekit ``rescaled_masked_tensor`` with the L1 norm."""
    masked = delta * mask
    if not rescale:
        return masked
    before, after = float(delta.abs().sum()), float(masked.abs().sum())
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def magnitude(delta: Tensor, density: float, rescale: bool) -> Tensor:
    """Keep exactly max(1, int(n * density)) largest magnitudes (mergekit ``magnitude``)."""
    if density >= 1:
        return delta
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * n))
    mask = torch.zeros(n, dtype=delta.dtype)
    mask[torch.argsort(delta.abs().reshape(-1), descending=True)[:k]] = 1
    return _rescaled(delta, mask.view_as(delta), rescale)


def outliers(delta: Tensor, density: float, gamma: float, rescale: bool) -> Tensor:
    """Model Breadcrumbs' band (mergekit ``magnitude_outliers``): sorted ascending, keep the
    int(n * density) entries after the n - kept - int(n * gamma) smallest."""
    if density >= 1:
        return delta
    n = delta.numel()
    kept, top = int(density * n), int(gamma * n)
    bottom = max(0, n - kept - top)
    mask = torch.zeros(n, dtype=delta.dtype)
    mask[torch.sort(delta.abs().reshape(-1)).indices[bottom: bottom + kept]] = 1
    return _rescaled(delta, mask.view_as(delta), rescale)


def bernoulli(delta: Tensor, density: float, rescale: bool, ctx: "TensorContext", k: int) -> Tensor:
    """DARE's drop (mergekit ``bernoulli``): each entry kept with probability ``density``."""
    if density >= 1:
        return delta
    keep = ctx.random_keep(k, delta.numel(), density).view_as(delta)  # (*s) 1.0 / 0.0
    return _rescaled(delta, keep, rescale)


def magprune(delta: Tensor, density: float, epsilon: float, rescale: bool, ctx: "TensorContext", k: int) -> Tensor:
    """DELLA's MagPrune (mergekit ``della_magprune``): per row, the rank (1 = smallest magnitude)
    normalised to [0, 1] sets p = density - epsilon + 2 epsilon * rank_norm."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError(f"epsilon {epsilon} must keep density +/- epsilon inside (0, 1) (density {density})")
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta  # (R, ...)
    ranks = rows.abs().argsort(dim=1).argsort(dim=1).to(delta.dtype) + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    p = (density - epsilon) + ((ranks - lo) / (hi - lo)).clamp(0, 1) * 2 * epsilon
    u = ctx.random_bits(k, p.numel()).view_as(p).to(torch.float32)  # (R, ...) uniform in [0, 2**24)
    keep = (u < p * float(1 << 24)).to(delta.dtype)
    return _rescaled(rows, keep, rescale).reshape(delta.shape)


def merge(x: Tensor, w: Tensor, ctx: "TensorContext", *, sparsify: Optional[str], sign: str, normalize: bool,
          rescale: bool, scale: float) -> Tensor:
    """x: (K, *s) task vectors, w: (K,) weights -> the merged delta (*s)."""
    K = x.shape[0]
    dens = ctx.params.get("density", [1.0] * K)
    for k in range(K):
        if sparsify == "magnitude":
            x[k] = magnitude(x[k], dens[k], rescale)
        elif sparsify == "random":
            x[k] = bernoulli(x[k], dens[k], rescale, ctx, k)
        elif sparsify == "outliers":
            x[k] = outliers(x[k], dens[k], ctx.params["gamma"][k], rescale)
        elif sparsify == "magprune":
            x[k] = magprune(x[k], dens[k], ctx.params["epsilon"][k], rescale, ctx, k)
    wk = w.to(x.dtype).view(K, *([1] * (x.dim() - 1)))  # (K, 1, ...)
    x.mul_(wk)  # weighted deltas
    if sign == "ties":
        majority = (x.sum(0) >= 0).to(x.dtype) * 2 - 1  # (*s)
        mask = (x.sign() == majority).to(x.dtype)  # (K, *s)
        mixed = (x * mask).sum(0)
        divisor = (wk * mask).sum(0)
        divisor[divisor == 0] = 1
    else:
        mixed = x.sum(0)
        divisor = wk.sum(0).expand_as(mixed).clone()
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if scale != 1:
        mixed *= scale
    return mixed
