"""Subpackages that are also the function of the same name (``transfuse.distill(...)``, ``transfuse.merge(...)``).

``transfuse.distill`` is both the package holding the loop and the function users call. Python
sets the attribute ``transfuse.distill`` to the package as soon as any of its submodules is
imported, so a plain function of that name would be shadowed; making the package callable
keeps one name working both ways.
"""
from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Make the module ``module_name`` callable; a call runs ``target`` ("pkg.mod:function")."""
    target_module, _, target_name = target.partition(":")

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(target_module), target_name)(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
