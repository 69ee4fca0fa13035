"""Train a builtin asset (the teachers shipped in ``transfuse.assets``) with its recorded recipe.

``ensure_builtin(name)`` gives the path of the shipped weights, or trains them once into the
asset cache (``~/.cache/transfuse/assets``) when the install is trimmed; ``train_builtin``
retrains into any file (``scripts/train_teacher.py`` rewrites the shipped ones). The asset
module itself only loads: how each asset is trained is recorded there (``BUILTIN``), done here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict

from .. import assets


def ensure_builtin(name: str) -> Path:
    """Path of the builtin weights ``name``, training them once into the cache if not shipped."""
    path = assets.builtin_path(name)
    if not path.exists():
        print(f"transfuse: builtin weights {name!r} are not shipped here; training them once into {path}")
        train_builtin(name, path)
    return path


def train_builtin(name: str, out: Path) -> Dict[str, Any]:
    """Train the builtin model ``name`` with cross-entropy and save it (with a .json of its metrics)."""
    from ..data import build_data
    from ..distill.loop import make_loader, train
    from ..eval import evaluate
    from ..models import build_model
    from ..objectives import build_objective
    from .distill import save_student

    spec = assets.builtin_spec(name)
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


if __name__ == "__main__":  # python -m transfuse.recipes.builtin_teacher [NAME]: train into the asset cache
    import sys

    print(ensure_builtin(sys.argv[1] if len(sys.argv) > 1 else "fashion_mnist_cnn"))
