"""transfuse: move knowledge between PyTorch / Hugging Face models (distill, merge, fuse)."""
from __future__ import annotations

from .errors import TransfuseError
from .signals import Batch, Outputs

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so that `import transfuse` stays light and `transfuse.merge` does not import training code.
    if name == "distill":
        from .distill.api import distill

        return distill
    if name == "merge":
        from .merge.api import merge

        return merge
    raise AttributeError(name)


__all__ = ["Batch", "Outputs", "TransfuseError", "distill", "merge", "__version__"]
