"""Weights shipped with transfuse, and the recipe that retrains each one.

``builtin_weights(name)`` returns the packaged file; if it is absent (a trimmed install) the
model is trained on the spot, once, into ``~/.cache/transfuse/assets``. ``scripts/train_teacher.py``
retrains the packaged files with the same recipe.
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


def builtin_weights(name: str) -> Path:
    """Path of the builtin weights ``name``, training them first if they are not shipped."""
    if name not in BUILTIN:
        raise TransfuseError(f"unknown builtin weights {name!r}.{closest(name, BUILTIN)} Known: {', '.join(BUILTIN)}.")
    packaged = HERE / f"{name}.safetensors"
    if packaged.exists():
        return packaged
    cached = _cache_dir() / f"{name}.safetensors"
    if not cached.exists():
        print(f"transfuse: builtin weights {name!r} are not shipped here; training them once into {cached}")
        train_builtin(name, cached)
    return cached


def builtin_spec(name: str) -> Dict[str, Any]:
    return BUILTIN[name]


def train_builtin(name: str, out: Path) -> Dict[str, Any]:
    """Train the builtin model ``name`` with cross-entropy and save it (with a .json of its metrics)."""
    import time

    from ..data import build_data
    from ..distill.loop import make_loader, train
    from ..eval import evaluate
    from ..models import build_model
    from ..objectives import build_objective
    from ..recipes.distill import save_student

    spec = BUILTIN[name]
    data = build_data(spec["data"], spec["data_params"])
    model = build_model(spec["model"], spec["model_params"], in_shape=data.in_shape, num_classes=data.num_classes)
    start = time.perf_counter()
    result = train(
        student=model,
        teacher=None,
        objective=build_objective("ce"),
        train_loader=make_loader(data.train, batch_size=spec["batch_size"], seed=spec["seed"]),
        epochs=spec["epochs"],
        lr=spec["lr"],
        schedule="onecycle",
        seed=spec["seed"],
    )
    seconds = time.perf_counter() - start
    metrics = evaluate(result.student, data.test)
    summary = {"name": name, "spec": spec, "test_accuracy": metrics["accuracy"], "ece": metrics["ece"], "train_seconds": seconds}
    out = Path(out)
    tmp_folder = out.parent / f".{out.stem}.tmp"
    save_student(result.student, tmp_folder, summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    (tmp_folder / "run_config.json").replace(out.with_suffix(".json"))
    (tmp_folder / "student.safetensors").replace(out)
    tmp_folder.rmdir()
    return summary
