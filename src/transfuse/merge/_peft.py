"""PEFT's ``merge_utils`` selection and sign election, written for the engine's stacked deltas.

Followed ``peft.utils.merge_utils`` 0.21.2: ``magnitude_based_pruning`` keeps exactly
k = int(density * n) entries chosen by ``torch.topk`` on |x| (so ties at the threshold fall as
torch.topk puts them, and density < 1 / n keeps nothing); density >= 1 prunes nothing;
``calculate_majority_sign_mask`` elects +1 where the "total" (sum of deltas) or "frequency"
(sum of signs) is >= 0.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .._lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

SIGN_METHODS = ("total", "frequency")


def check_sign_method(sign_method: str) -> None:
    if sign_method not in SIGN_METHODS:
        raise ValueError(f"sign_method must be 'total' or 'frequency' (PEFT's majority_sign_method), got {sign_method!r}")


def topk_keep_(x: Tensor, densities: Sequence[float]) -> Tensor:
    """Zero all but the int(density * n) largest |x[k]| of every model, IN PLACE (PEFT's count and ties).

    x: (K, *s); densities: K floats. Returns x.
    """
    K = x.shape[0]
    flat = x.reshape(K, -1)  # (K, n), a view
    n = flat.shape[1]
    for k, d in enumerate(densities):
        if d >= 1.0:
            continue
        mask = torch.zeros(n, dtype=flat.dtype)  # (n,)
        mask[torch.topk(flat[k].abs(), k=int(d * n), largest=True).indices] = 1.0
        flat[k].mul_(mask)
    return x


def majority_sign(x: Tensor, sign_method: str = "total") -> Tensor:
    """(K, *s) -> (*s) +1 / -1: the sign of sum_k x_k ("total") or of sum_k sign(x_k) ("frequency"); +1 at 0."""
    magnitude = x.sum(0) if sign_method == "total" else torch.sign(x).sum(0)
    return torch.where(magnitude >= 0, 1.0, -1.0).to(x.dtype)
