"""The min-norm point of the convex hull of task gradients (MGDA, Désidéri 2012; Sener & Koltun 2018)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def min_norm_weights(gram: Tensor, *, iterations: int = 64) -> Tensor:
    """Weights w on the simplex minimising |sum_i w_i g_i|^2, from the Gram matrix G_ij = <g_i, g_j>.

    Frank-Wolfe as in Sener & Koltun's ``MinNormSolver`` (exact line search between the current
    point and the best vertex); for two tasks this is their closed form. gram (K, K) -> (K,).
    """
    k = gram.shape[0]
    gram = gram.double()
    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    if k == 1:
        return w.float()
    for _ in range(iterations):
        grad = gram @ w  # (K,): the derivative of w^T G w / 2
        t = int(torch.argmin(grad))
        # line search on w + gamma (e_t - w): minimise |(1-gamma) v + gamma g_t|^2, v = sum w_i g_i
        vv, vt, tt = w @ gram @ w, grad[t], gram[t, t]
        denom = vv - 2 * vt + tt
        if denom <= 1e-18:
            break
        gamma = float(((vv - vt) / denom).clamp(0.0, 1.0))
        if gamma < 1e-9:
            break
        w = (1 - gamma) * w
        w[t] += gamma
    return w.float()


def loss_min_norm_weights(losses: Sequence[Tensor], params: Sequence[Tensor]) -> Tensor:
    """The min-norm simplex weights of the losses' gradients over ``params`` (one backward each,
    the graph kept for the real backward). K losses -> (K,)."""
    flat = []
    for loss in losses:
        grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
        flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)]))
    g = torch.stack(flat).float()  # (K, parameters)
    return min_norm_weights(g @ g.t())  # (K,)
