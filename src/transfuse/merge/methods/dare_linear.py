"""DARE summed linearly as mergekit's ``dare_linear`` (Yu et al., 2024; mergekit 0.1.5 semantics).

As ``dare_ties`` without the sign election: the dropped (and, with ``rescale``, L1-rescaled)
deltas are summed with their weights, divided by the weights' sum when ``normalize``.
"""
from __future__ import annotations

from . import _gta, define


@define("dare_linear", per_model=("density",), validate=_gta.check)
def dare_linear(x, w, ctx, *, density: float = 1.0, sign: str = "none", normalize: bool = False, rescale: bool = True,
                scale: float = 1.0, int8_mask: bool = False):
    """DARE drop + L1 rescale, weighted sum (Yu et al., 2024), as mergekit ``dare_linear``."""
    return _gta.merge(x, w, ctx, sparsify="random", sign=sign, normalize=normalize, rescale=rescale, scale=scale)
