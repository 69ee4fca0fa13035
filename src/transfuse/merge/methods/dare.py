"""DARE (Yu et al., 2024, "Language Models are Super Mario"): drop and rescale task vectors.

Each entry of each task vector is kept with probability ``density`` (= 1 - p) and the kept
entries are multiplied by 1/(1 - p), as in the paper, so the expected task vector is unchanged.
``rescale="l1"`` instead matches each vector's L1 norm to what it was (mergekit); ``"none"``
keeps the dropped vector as is. ``sign="ties"`` follows with TIES sign election and the
disjoint mean (mergekit ``dare_ties``); ``sign="none"`` sums as task arithmetic (``dare_linear``).
``sign_method="frequency"`` elects the sign of the count of signs (PEFT's ``dare_ties`` option).
Entry i of model k is kept when its counter-based random number (a hash of seed, tensor name,
k and i: ``TensorContext.random_bits``) is below density * 2**24, so the result depends neither
on the order tensors are visited in nor on the block size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import kernels
from .._ops import counter_key, disjoint_merge, elect_sign, keep_threshold, per_model, weighted_sum
from .._peft import check_sign_method, majority_sign
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("dare")
class Dare(MergeMethod):
    """DARE (Yu et al., 2024): keep each delta entry with prob. density, rescale by 1/density; optional TIES signs."""

    per_model_params = ("density",)

    def __init__(self, *, density: float = 0.5, scale: float = 1.0, rescale: str = "inverse",
                 sign: str = "none", normalize: str = "count", sign_method: str = "total") -> None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        if rescale not in ("inverse", "l1", "none"):
            raise ValueError(f"rescale must be 'inverse', 'l1' or 'none', got {rescale!r}")
        if sign not in ("none", "ties"):
            raise ValueError(f"sign must be 'none' or 'ties', got {sign!r}")
        if normalize not in ("count", "weights", "none"):
            raise ValueError(f"normalize must be 'count', 'weights' or 'none', got {normalize!r}")
        check_sign_method(sign_method)
        self.density, self.scale, self.rescale, self.sign, self.normalize = density, scale, rescale, sign, normalize
        self.sign_method = sign_method
        self.chunkable = rescale != "l1"  # the L1 norm is a whole-tensor quantity

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        K = x.shape[0]
        flat = x.reshape(K, -1)  # (K, n), a view of the engine's scratch block
        dens = ctx.params["density"]
        before = flat.abs().sum(1) if self.rescale == "l1" else None  # (K,)
        for k in range(K):
            if dens[k] < 1.0:
                flat[k].mul_(ctx.random_keep(k, flat.shape[1], dens[k]))  # (n,) 1.0 / 0.0
        d = x
        if self.rescale == "l1":
            after = flat.abs().sum(1).clamp(min=1e-12)
            d.mul_(per_model(before / after, x))
        if self.sign == "ties":
            if self.rescale == "inverse":
                d.div_(per_model(ctx.per_model["density"], x))
            sign = elect_sign(d) if self.sign_method == "total" else majority_sign(d, self.sign_method)
            return self.scale * disjoint_merge(d, w, sign, normalize=self.normalize)
        if self.rescale == "inverse":  # 1/density folded into the weights: one pass fewer
            w = w / ctx.per_model["density"]
        return weighted_sum(d, w, self.scale)

    def fast(self) -> bool:
        return self.sign == "none" and self.rescale != "l1"

    def fast_merge(self, xs, base, out, w, ctx, state) -> None:
        dens = np.asarray(ctx.params["density"], np.float32)  # (K,)
        wk = w / dens if self.rescale == "inverse" else w  # float32, as the torch path
        coef = [self.scale * float(v) for v in wk]
        thresholds, keys = [], []
        for k, d in enumerate(dens.tolist()):
            key = counter_key(ctx.seed, ctx.name, k)
            thresholds.append(keep_threshold(d) if d < 1.0 else None)
            keys.append(((ctx.start + key) & kernels.MASK32, key >> 32))
        kernels.weighted_merge(xs, base, out, coef, keep=(thresholds, keys))
