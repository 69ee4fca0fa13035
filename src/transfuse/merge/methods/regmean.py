"""RegMean (Jin et al., 2023, "Dataless knowledge fusion by merging weights of language models").

For a linear layer y = x W^T, each model's Gram matrix G_i = X_i^T X_i of the layer's inputs
(from :func:`transfuse.merge.stats.regmean_grams`, hooks over a small data set) gives the
closed form W = (sum_i W_i G~_i)(sum_i G~_i)^-1 with G~ = alpha G + (1 - alpha) diag(G), the
paper's shrinking of the off-diagonal. Weights ``w`` scale each model's Gram. Tensors without
a Gram matrix (biases, norms, convolutions) are averaged with the weights.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import torch
from .._ops import per_model
from . import MergeMethod, TensorContext, methods

if TYPE_CHECKING:
    from torch import Tensor


@methods.register("regmean")
class RegMean(MergeMethod):
    """RegMean (Jin et al., 2023): per linear layer W = (sum W_i G_i)(sum G_i)^-1 from input Gram matrices."""

    operates_on = "weights"
    needs_base = False
    data_driven = True
    statistic_shape = staticmethod(lambda shape: (shape[1], shape[1]) if len(shape) == 2 else None)  # the input Gram (in, in)

    def __init__(self, *, alpha: float = 0.9) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def __call__(self, x: Tensor, w: Tensor, ctx: TensorContext) -> Tensor:
        gs = [get(None) if get is not None else None for get in ctx.extra["statistics"]]
        if x.dim() != 3 or any(g is None or g.shape != (x.shape[2], x.shape[2]) for g in gs):
            return (x * per_model(w, x)).sum(0) / w.sum()
        G = torch.stack(gs).double()  # (K, in, in)
        diag = torch.diag_embed(G.diagonal(dim1=1, dim2=2))
        G = self.alpha * G + (1 - self.alpha) * diag
        G = G * w.double().view(-1, 1, 1)
        lhs = G.sum(0)  # (in, in)
        rhs = torch.einsum("kij,koj->io", G, x.double())  # sum_k G_k W_k^T: (in, rows)
        return torch.linalg.solve(lhs, rhs).T.to(x.dtype)  # (rows, in)
