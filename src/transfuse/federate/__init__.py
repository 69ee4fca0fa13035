"""Federated learning on Flower: splits, aggregation (fedavg or any merge method on client deltas),
methods (fedavg, fedprox, feddf, ...), the Flower strategy and an in-process loop over the same objects.

``transfuse.federate(config)`` and ``transfuse.federate.federate(config)`` both run a recipe (the
package is callable, see ``transfuse._callable``).
"""
from __future__ import annotations

from .._callable import make_callable


def federate(*args, **kwargs):
    """Run a federate recipe; see :func:`transfuse.federate.api.federate`."""
    from .api import federate as _federate

    return _federate(*args, **kwargs)


make_callable(__name__, "transfuse.federate.api:federate")
