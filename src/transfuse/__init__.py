"""transfuse: move knowledge between PyTorch / Hugging Face models (distill, merge, fuse)."""
from __future__ import annotations

from .errors import TransfuseError
from .signals import Batch, Outputs

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import transfuse` stays light; both subpackages are callable (see _callable.py).
    if name in ("distill", "merge"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)


__all__ = ["Batch", "Outputs", "TransfuseError", "distill", "merge", "__version__"]
