"""Model Stock (Jang et al., 2024): interpolate the average of fine-tuned weights toward the base.

Per tensor, cos is the mean pairwise cosine between the task vectors (whole tensor, flattened),
t = K cos / (1 + (K - 1) cos), and theta = theta_0 + t * (weighted mean of the task vectors),
which is t * mean(theta_i) + (1 - t) * theta_0 of the paper.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import torch
from .._ops import per_model
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("model_stock")
class ModelStock(MergeMethod):
    """Model Stock (Jang et al., 2024): t = K cos / (1 + (K-1) cos) from the task vectors' mean pairwise cosine."""

    tensor_passes = 1

    def __init__(self, *, eps: float = 1e-12) -> None:
        self.eps = eps

    def observe_tensor(self, pass_index, x, w, ctx, state) -> None:
        v = x.reshape(x.shape[0], -1).double()
        g = v @ v.T  # (K, K)
        state["gram"] = state["gram"] + g if "gram" in state else g

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        K = x.shape[0]
        g = ctx.extra["state"]["gram"]
        norms = g.diagonal().clamp(min=self.eps).sqrt()
        cos = g / (norms[:, None] * norms[None, :])
        iu = torch.triu_indices(K, K, 1)
        c = float(cos[iu[0], iu[1]].mean()) if K > 1 else 1.0
        t = K * c / (1 + (K - 1) * c) if (1 + (K - 1) * c) != 0 else 0.0
        mean = (x * per_model(w, x)).sum(0) / w.sum()
        return t * mean
