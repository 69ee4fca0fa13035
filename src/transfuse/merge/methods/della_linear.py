"""DELLA's MagPrune summed linearly, as mergekit's ``della_linear`` (Deep et al., 2024; mergekit 0.1.5).

Per row, entries ranked by magnitude are kept with probability density - epsilon + 2 epsilon *
rank_norm; ``rescale`` (default on) restores the L1 norm; weighted sum. With ``sign: ties`` and
``normalize: true`` this is mergekit's ``della`` (which a mergekit config gets for that name);
transfuse's own ``della`` is the paper's form (epsilon/2 band, 1/p rescale).
"""
from __future__ import annotations

from . import _gta, define


@define("della_linear", per_model=("density", "epsilon"), validate=_gta.check_magprune)
def della_linear(x, w, ctx, *, density: float = 1.0, epsilon: float = 0.15, sign: str = "none", normalize: bool = False,
                 rescale: bool = True, scale: float = 1.0, int8_mask: bool = False):
    """DELLA MagPrune + L1 rescale, weighted sum (Deep et al., 2024), as mergekit ``della_linear``."""
    return _gta.merge(x, w, ctx, sparsify="magprune", sign=sign, normalize=normalize, rescale=rescale, scale=scale)
