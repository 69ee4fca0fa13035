"""NearSwap (alchemonaut, 2024; mergekit 0.1.5 ``nearswap``): take the other model's value where it
is near the base: per entry, weight = clamp(t / max(|tau|, 1e-6), 0, 1) and theta = theta_0 + weight * tau."""
from __future__ import annotations

from . import define


@define("nearswap", models=1, whole_tensor=False)
def nearswap(x, w, ctx, *, t: float = 0.0):
    """NearSwap (mergekit): entries of the one expert within about t of the base replace the base."""
    d = x[0]  # (*s) the one task vector
    return (t / d.abs().clamp(min=1e-6)).clamp(min=0, max=1) * d
