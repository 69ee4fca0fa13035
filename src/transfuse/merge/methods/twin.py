"""Twin-Merging (Lu et al., 2024): a shared expert plus SVD-compressed exclusive experts, routed per input.

Offline (this method, streamed per tensor): the shared model is task arithmetic,
theta_s = theta_0 + shared_scale * sum_i w_i tau_i; each model's exclusive knowledge
v_i = theta_i - theta_s is truncated by SVD to rank ceil(rank_ratio * min(out, in)) and stored as
factors B_i (out, r) and A_i (r, in) in ``twin_experts.safetensors`` (1-D tensors kept dense).
Online: :mod:`transfuse.merge.twin_model` trains a small router on the shared model's features
and adds sum_i softmax(router)_i B_i A_i x in the forward pass for the whole batch.
Followed the method of the official code (github.com/LZY-the-boys/Twin-Merging).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..._lazy import torch
from .._ops import per_model
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("twin")
class Twin(MergeMethod):
    """Twin-Merging (Lu et al., 2024): task-arithmetic shared model + rank-truncated exclusive experts + router."""

    chunkable = False  # the SVD needs the whole matrix
    extra_file = "twin_experts.safetensors"

    def __init__(self, *, shared_scale: float = 0.3, rank_ratio: float = 0.1) -> None:
        if not 0.0 < rank_ratio <= 1.0:
            raise ValueError(f"rank_ratio must be in (0, 1], got {rank_ratio}")
        self.shared_scale, self.rank_ratio = shared_scale, rank_ratio

    def rank(self, shape: tuple) -> int:
        out, inner = shape[0], math.prod(shape[1:])
        return max(1, math.ceil(self.rank_ratio * min(out, inner)))

    def extra_specs(self, name: str, shape: tuple, k: int) -> list:
        specs = []
        for i in range(k):
            if len(shape) >= 2:
                r = self.rank(shape)
                specs += [(f"{name}::{i}::B", (shape[0], r)), (f"{name}::{i}::A", (r, math.prod(shape[1:])))]
            else:
                specs.append((f"{name}::{i}::D", tuple(shape)))
        return specs

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        shared = self.shared_scale * (x * per_model(w, x)).sum(0)  # (*s) delta of the shared model
        ctx.extra["shared"] = shared
        return shared.clone()  # the engine adds the base in place

    def extra_outputs(self, x: Tensor, w: Tensor, ctx: TensorContext) -> dict:
        shared = ctx.extra["shared"]
        out = {}
        for i in range(x.shape[0]):
            v = x[i] - shared
            if v.dim() >= 2:
                r = self.rank(tuple(v.shape))
                U, S, Vh = torch.linalg.svd(v.reshape(v.shape[0], -1).double(), full_matrices=False)
                out[f"{ctx.name}::{i}::B"] = (U[:, :r] * S[:r]).float()
                out[f"{ctx.name}::{i}::A"] = Vh[:r].float()
            else:
                out[f"{ctx.name}::{i}::D"] = v.float()
        return out

    def artifact_info(self, k: int, names: list) -> dict:
        return {"method": "twin", "experts": names, "shared_scale": self.shared_scale, "rank_ratio": self.rank_ratio}
