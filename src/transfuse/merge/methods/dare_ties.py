"""DARE + TIES as mergekit's ``dare_ties`` (Yu et al., 2024; mergekit 0.1.5 semantics).

Each delta entry is kept with probability ``density``; ``rescale`` (default on) scales the kept
entries back to the delta's L1 norm, as mergekit does (transfuse's ``dare`` rescales by 1/density,
the paper's form); then TIES sign election on the weighted deltas and, with ``normalize``, division by
the agreeing weights; times ``scale`` (mergekit's ``lambda``).
"""
from __future__ import annotations

from . import _gta, define


@define("dare_ties", per_model=("density",), validate=_gta.check)
def dare_ties(x, w, ctx, *, density: float = 1.0, sign: str = "ties", normalize: bool = False, rescale: bool = True,
              scale: float = 1.0, int8_mask: bool = False):
    """DARE drop + L1 rescale + TIES signs (Yu et al., 2024), as mergekit ``dare_ties``."""
    return _gta.merge(x, w, ctx, sparsify="random", sign=sign, normalize=normalize, rescale=rescale, scale=scale)
