"""``torch``, imported on its first use rather than at ``import``.

A merge whose every tensor takes the fused kernels (``merge/kernels.py``) never calls torch, yet
importing it costs ~1.0 s and tearing it down at exit ~0.4 s more on these machines: together
more than half of the I/O floor of a 1B-parameter merge. The merge modules therefore take
``torch`` from here: a stand-in whose first attribute access runs the real ``import torch``.

Not the standard library's ``importlib.util.LazyLoader``: on Python 3.11 a second thread that
touches a module while the first is still executing it sees it half-built (the merge's reader
threads did: "module 'torch' has no attribute 'Size'"). Going through ``importlib.import_module``
instead lets the import system's per-module lock make other threads wait for the finished module.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule(ModuleType):
    """Stands for module ``name``; imports it on the first attribute asked for."""

    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later lookups are plain attribute reads
        return getattr(module, attr)


def import_now(module: ModuleType) -> ModuleType:
    """The real module behind ``module`` (a LazyModule or a module), imported now."""
    return importlib.import_module(module.__name__)


torch = LazyModule("torch")
