"""Model Breadcrumbs with TIES signs, as mergekit's ``breadcrumbs_ties`` (Davari & Belilovsky, 2024;
mergekit 0.1.5 semantics).

Per tensor and model, magnitudes sorted ascending: the int(n * density) entries after the
n - kept - int(n * gamma) smallest are kept (the top-gamma outliers and the small tail dropped);
the weighted deltas are sign-elected (TIES, on the weighted sum) and, with ``normalize``,
divided by the agreeing weights. ``sign: none`` is mergekit's ``breadcrumbs`` (which a mergekit
config gets for that name); transfuse's ``breadcrumbs`` keeps its own parametrisation.
"""
from __future__ import annotations

from . import _gta, define


@define("breadcrumbs_ties", per_model=("density", "gamma"), validate=_gta.check)
def breadcrumbs_ties(x, w, ctx, *, density: float = 1.0, gamma: float = 0.01, sign: str = "ties", normalize: bool = False,
                     rescale: bool = False, scale: float = 1.0, int8_mask: bool = False):
    """Breadcrumbs' outlier band + TIES signs (Davari & Belilovsky, 2024), as mergekit ``breadcrumbs_ties``."""
    return _gta.merge(x, w, ctx, sparsify="outliers", sign=sign, normalize=normalize, rescale=rescale, scale=scale)
