"""SCE (Wan et al., 2024, "FuseChat"): Select by variance, Calculate weights, Erase minority signs
(mergekit 0.1.5 ``sce``, followed).

Task vectors tau_k (K, *s): with ``select_topk`` < 1 only the int(nonzero * select_topk) entries of
highest variance across the models are kept; each model's weight is its mean tau^2 over the tensor,
normalised to sum 1 (uniform when that sum is ~0); entries whose sign disagrees with the sign of the
sum are erased; the result is the weighted sum over the agreeing weights (clamped at 1e-6).
Per-model ``weight`` is not used (as mergekit).
"""
from __future__ import annotations

from ..._lazy import torch
from . import define


def _check(*, select_topk: float = 1.0, int8_mask: bool = False) -> None:
    if not 0.0 <= select_topk <= 1.0:
        raise ValueError(f"select_topk must be in [0, 1], got {select_topk}")


@define("sce", validate=_check)
def sce(x, w, ctx, *, select_topk: float = 1.0, int8_mask: bool = False):
    """SCE (Wan et al., 2024): top-variance selection, mean-square weights, sign erase (mergekit ``sce``)."""
    K = x.shape[0]
    if select_topk < 1:
        var = x.var(dim=0, unbiased=False)  # (*s)
        k = int(int(torch.count_nonzero(var)) * select_topk)
        mask = torch.zeros(var.numel(), dtype=x.dtype)
        if k > 0 and select_topk > 0:
            mask[torch.topk(var.abs().reshape(-1), k=k, largest=True).indices] = 1
        x = x * mask.view_as(var)
    majority = (x.sum(0) >= 0).to(x.dtype) * 2 - 1  # (*s)
    erase = (x.sign() == majority).to(x.dtype)  # (K, *s)
    tw = x.square().reshape(K, -1).mean(dim=1)  # (K,)
    total = float(tw.sum())
    tw = torch.ones_like(tw) / K if abs(total) < 1e-6 else tw / total
    ew = tw.view(K, *([1] * (x.dim() - 1))) * erase
    return (x * ew).sum(0) / ew.sum(0).clamp(min=1e-6)
