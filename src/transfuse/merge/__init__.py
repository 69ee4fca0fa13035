"""Model merging: a streaming engine (engine.py), one file per method (methods/), I/O (io.py).

``transfuse.merge(config)`` and ``transfuse.merge.merge(config)`` both run a merge: the package
is callable (see ``transfuse._callable``).
"""
from __future__ import annotations

from .._callable import make_callable


def merge(*args, **kwargs):
    """Run a merge; see :func:`transfuse.merge.api.merge`."""
    from .api import merge as _merge

    return _merge(*args, **kwargs)


make_callable(__name__, "transfuse.merge.api:merge")
