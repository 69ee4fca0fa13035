"""DELLA-Merging (Deep et al., 2024): MagPrune, magnitude-ranked drop probabilities, then elect and fuse.

Per row of each task vector, entries get ranks r = 0..n-1 by magnitude (0 = smallest) and are
kept with probability p_r = (density - epsilon/2) + epsilon * r / n, so bigger entries are
dropped less and about ``density`` of the row survives; kept entries are rescaled by 1/p_r
(the paper's step 1). Then, with ``sign="ties"`` (default, the paper's DELLA), TIES sign election
and the disjoint mean; ``sign="none"`` sums with weights (mergekit ``della_linear``). The result
is theta_0 + scale * merged. Randomness: the same counter-based draws as DARE.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import torch
from .._ops import disjoint_merge, elect_sign, per_model
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("della")
class Della(MergeMethod):
    """DELLA-Merging (Deep et al., 2024): MagPrune (rank-based keep probabilities, 1/p rescale) + TIES signs."""

    per_model_params = ("density",)

    def __init__(self, *, density: float = 0.5, epsilon: float = 0.1, scale: float = 1.0, sign: str = "ties") -> None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        if epsilon < 0 or density - epsilon / 2 <= 0 or density + epsilon / 2 > 1.0 + 1e-9:
            raise ValueError(f"need density - epsilon/2 > 0 and density + epsilon/2 <= 1; got {density}, {epsilon}")
        if sign not in ("none", "ties"):
            raise ValueError(f"sign must be 'none' or 'ties', got {sign!r}")
        self.density, self.epsilon, self.scale, self.sign = density, epsilon, scale, sign

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        K = x.shape[0]
        rows = x.reshape(K, x.shape[1] if x.dim() > 1 else 1, -1)  # (K, R, n) rows kept whole
        R, n = rows.shape[1], rows.shape[-1]
        ranks = rows.abs().argsort(-1).argsort(-1).to(x.dtype)  # (K, R, n), 0 = smallest
        dens = ctx.per_model["density"].view(K, 1, 1)
        p = (dens - self.epsilon / 2) + self.epsilon * ranks / n
        p = p.clamp(1e-6, 1.0)
        bits = torch.stack([ctx.random_bits(k, R * n).clone() for k in range(K)]).view(K, R, n)  # as DARE's draws
        keep = bits < p * float(1 << 24)
        d = (rows * keep / p).reshape(x.shape)
        if self.sign == "ties":
            return self.scale * disjoint_merge(d, w, elect_sign(d), normalize="count")
        return self.scale * (d * per_model(w, x)).sum(0)
