"""Model Stock (Jang et al., 2024): interpolate the average of fine-tuned weights toward the base.

Per tensor (or, with ``filter_wise``, per row: mergekit's option), cos is the mean pairwise cosine
between the task vectors (norm products clamped at 1e-6, as mergekit 0.1.5), t = K cos / (1 + (K - 1) cos)
(0 where the denominator is ~0), and theta = theta_0 + t * (weighted mean of the task vectors), which
is t * mean(theta_i) + (1 - t) * theta_0 of the paper.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import torch
from .._ops import per_model
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


def _t(cos: "Tensor", K: int) -> "Tensor":
    den = 1 + (K - 1) * cos
    singular = den.abs() < 1e-6
    return torch.where(singular, torch.zeros_like(cos), K * cos / torch.where(singular, torch.ones_like(den), den))


@methods.register("model_stock")
class ModelStock(MergeMethod):
    """Model Stock (Jang et al., 2024): t = K cos / (1 + (K-1) cos) from the task vectors' mean pairwise cosine."""

    models_min = 2  # the angle between two fine-tuned models (mergekit: at least 3 inputs with the base)

    def __init__(self, *, filter_wise: bool = False, eps: float = 1e-6) -> None:
        self.filter_wise, self.eps = filter_wise, eps
        self.tensor_passes = 0 if filter_wise else 1  # filter-wise: rows are whole in every block

    def observe_tensor(self, pass_index, x, w, ctx, state) -> None:
        v = x.reshape(x.shape[0], -1).double()
        g = v @ v.T  # (K, K)
        state["gram"] = state["gram"] + g if "gram" in state else g

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        K = x.shape[0]
        mean = (x * per_model(w, x)).sum(0) / w.sum()
        if K < 2:
            return mean
        iu = torch.triu_indices(K, K, 1)
        if self.filter_wise:
            rows = x.reshape(K, -1, x.shape[-1]) if x.dim() > 1 else x.reshape(K, 1, -1)  # (K, R, n)
            norms = rows.norm(dim=-1)  # (K, R)
            cos = torch.stack([((rows[i] * rows[j]).sum(-1) / (norms[i] * norms[j]).clamp(min=self.eps)).clamp(-1, 1)
                               for i, j in zip(iu[0].tolist(), iu[1].tolist())]).mean(0)  # (R,)
            t = _t(cos, K).to(x.dtype)
            return (t.view(-1, 1) * mean.reshape(t.shape[0], -1)).reshape(mean.shape)
        g = ctx.extra["state"]["gram"]
        norms = g.diagonal().clamp(min=0).sqrt()
        cos = (g / (norms[:, None] * norms[None, :]).clamp(min=self.eps)).clamp(-1, 1)
        t = float(_t(cos[iu[0], iu[1]].mean(), K))
        return t * mean
