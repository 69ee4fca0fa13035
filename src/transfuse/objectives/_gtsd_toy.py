"""The kernel-ridge toy of Borup & Andersen 2021 (Kennethborup/self_distillation toy_example.ipynb).

11 noisy sinusoid points (Mobahi et al. 2020's values), RBF kernel gamma 80, ridge lambda 0.2.
Generation t fits kernel ridge to the targets a y + (1 - a) f_{t-1}(X); the loss is the MSE to
sin(2 pi x) on a grid of 101 points. The limit is a K_x (a K + lambda I)^-1 y.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

X = np.arange(0, 1.1, 0.1).reshape(-1, 1)
Y = np.array([
    0.38476636465198066, 1.2333967683416893, 1.33232242218057, 0.69201594888895180, -0.29756145531871736,
    -0.24189291901377769, -0.7964485769175675, -0.9616480167034174, -0.49672509509916934, -0.3469066003991437,
    0.5589512650600734,
]).reshape(-1, 1)


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    return np.exp(-gamma * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def kernel_ridge_self_distillation(alpha: float, steps: int, *, lambd: float = 0.2, gamma: float = 80.0) -> Tuple[List[float], float]:
    """Losses to the true sinusoid of generations 1..steps, and of the limiting solution."""
    grid = np.arange(0, 1.01, 0.01).reshape(-1, 1)
    truth = np.sin(grid * 2 * np.pi)
    k = _rbf(X, X, gamma)
    kx = _rbf(grid, X, gamma)
    inv = np.linalg.inv(k + lambd * np.eye(len(Y)))
    fit_train = k @ inv  # (11, 11)
    fit_grid = kx @ inv  # (101, 11)
    targets_prev, losses = Y, []
    for _ in range(steps):
        targets = alpha * Y + (1 - alpha) * targets_prev
        losses.append(float(np.mean((fit_grid @ targets - truth) ** 2)))
        targets_prev = fit_train @ targets
    limit = alpha * kx @ np.linalg.inv(alpha * k + lambd * np.eye(len(Y))) @ Y
    return losses, float(np.mean((limit - truth) ** 2))


if __name__ == "__main__":  # python -m transfuse.objectives._gtsd_toy
    for a in (0.0, 0.35):
        losses, lim = kernel_ridge_self_distillation(a, 6)
        print(f"alpha={a}: " + " ".join(f"{v:.5f}" for v in losses) + f"  limit {lim:.5f}")
