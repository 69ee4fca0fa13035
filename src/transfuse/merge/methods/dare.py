"""DARE (Yu et al., 2024, "Language Models are Super Mario"): drop and rescale task vectors.

Each entry of each task vector is kept with probability ``density`` (= 1 - p) and the kept
entries are multiplied by 1/(1 - p), as in the paper, so the expected task vector is unchanged.
``rescale="l1"`` instead matches each vector's L1 norm to what it was (mergekit); ``"none"``
keeps the dropped vector as is. ``sign="ties"`` follows with TIES sign election and the
disjoint mean (mergekit ``dare_ties``); ``sign="none"`` sums as task arithmetic (``dare_linear``).
The mask comes from a generator seeded by (seed, tensor name, row offset), so the result does
not depend on the order tensors are visited in.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._ops import disjoint_merge, elect_sign, per_model, weighted_sum
from . import MergeMethod, TensorContext, methods


@methods.register("dare")
class Dare(MergeMethod):
    """DARE (Yu et al., 2024): keep each delta entry with prob. density, rescale by 1/density; optional TIES signs."""

    per_model_params = ("density",)

    def __init__(self, *, density: float = 0.5, scale: float = 1.0, rescale: str = "inverse",
                 sign: str = "none", normalize: str = "count") -> None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        if rescale not in ("inverse", "l1", "none"):
            raise ValueError(f"rescale must be 'inverse', 'l1' or 'none', got {rescale!r}")
        if sign not in ("none", "ties"):
            raise ValueError(f"sign must be 'none' or 'ties', got {sign!r}")
        if normalize not in ("count", "weights", "none"):
            raise ValueError(f"normalize must be 'count', 'weights' or 'none', got {normalize!r}")
        self.density, self.scale, self.rescale, self.sign, self.normalize = density, scale, rescale, sign, normalize
        self.chunkable = rescale != "l1"  # the L1 norm is a whole-tensor quantity

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        dens = per_model(ctx.per_model["density"], x)  # (K, 1, ...)
        keep = torch.rand(x.shape, generator=ctx.generator) < dens  # (K, *s)
        K = x.shape[0]
        before = x.abs().reshape(K, -1).sum(1) if self.rescale == "l1" else None
        d = x.mul_(keep)  # in the engine's scratch block
        if self.rescale == "inverse":
            d.div_(dens)
        elif self.rescale == "l1":
            after = d.abs().reshape(K, -1).sum(1).clamp(min=1e-12)
            d.mul_(per_model(before / after, x))
        if self.sign == "ties":
            return self.scale * disjoint_merge(d, w, elect_sign(d), normalize=self.normalize)
        return weighted_sum(d, w, self.scale)
