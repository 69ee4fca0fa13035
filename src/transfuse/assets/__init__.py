"""Weights shipped with transfuse, and the record of how each one was trained.

This module only loads: ``builtin_weights(name)`` returns the packaged file, or the copy trained
once into ``~/.cache/transfuse/assets`` on a trimmed install. Training is a recipe,
``transfuse.recipes.builtin_teacher`` (which recipes call when the file is absent);
``scripts/train_teacher.py`` retrains the packaged files with it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

from ..errors import TransfuseError, closest

HERE = Path(__file__).parent

# name -> how it is trained: model, data and the loop's settings.
BUILTIN: Dict[str, Dict[str, Any]] = {
    "fashion_mnist_cnn": {
        "model": "cnn",
        "model_params": {},
        "data": "fashion_mnist",
        "data_params": {},
        "epochs": 3,
        "lr": 2e-3,
        "batch_size": 128,
        "seed": 0,
    },
}


def _cache_dir() -> Path:
    return Path(os.environ.get("TRANSFUSE_CACHE", "~/.cache/transfuse")).expanduser() / "assets"


def builtin_spec(name: str) -> Dict[str, Any]:
    """How the builtin weights ``name`` were trained (model, data, the loop's settings)."""
    if name not in BUILTIN:
        raise TransfuseError(f"unknown builtin weights {name!r}.{closest(name, BUILTIN)} Known: {', '.join(BUILTIN)}.")
    return BUILTIN[name]


def builtin_path(name: str) -> Path:
    """Where the builtin weights ``name`` are: the packaged file, else their place in the asset cache."""
    builtin_spec(name)
    packaged = HERE / f"{name}.safetensors"
    return packaged if packaged.exists() else _cache_dir() / f"{name}.safetensors"


def builtin_weights(name: str) -> Path:
    """Path of the builtin weights ``name``; a clear error when neither shipped nor trained yet."""
    path = builtin_path(name)
    if not path.exists():
        raise TransfuseError(
            f"builtin weights {name!r} are not shipped with this install and not in {str(path.parent)!r}; "
            f"train them once with `python -m transfuse.recipes.builtin_teacher {name}` (or use them from a recipe, "
            "which trains them on first use)"
        )
    return path
