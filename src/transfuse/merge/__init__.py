"""Model merging: a streaming engine (engine.py), one file per method (methods/), I/O (io.py).

``transfuse.merge(config)`` and ``transfuse.merge.merge(config)`` both run a merge: the package
``transfuse.merge`` is itself callable, because importing any of its submodules makes the
attribute ``transfuse.merge`` this package rather than the function.
"""
from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .api import merge as _merge

        return _merge(*args, **kwargs)


def merge(*args, **kwargs):
    """Run a merge; see :func:`transfuse.merge.api.merge`."""
    from .api import merge as _merge

    return _merge(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
