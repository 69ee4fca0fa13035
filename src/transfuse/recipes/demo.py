"""`transfuse demo`: distil a small CNN teacher into a small MLP on Fashion-MNIST.

The setting is the common real one where transfer helps: 5,000 labelled images and 55,000
unlabelled ones. The student without a teacher can use only the labelled images; the distilled
student learns from the teacher's soft predictions on all 60,000 (its logits are computed once
and cached). Both students get about the same number of optimizer steps.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from rich.table import Table

from .._console import console
from ..cache import CachedTeacher, build_or_load_logits_cache
from ..data import build_data
from ..distill.loop import make_loader, train
from ..eval import evaluate, write_report
from ..models import build_model
from ..objectives import build_objective
from .distill import load_weights

LABELLED = 5000
STUDENT = {"name": "mlp", "params": {"hidden": [64]}}
KD = {"temperature": 4.0, "alpha": 0.9}
CE_EPOCHS, KD_EPOCHS = 30, 3  # ~1,170 and ~1,400 steps of 128


def _small() -> bool:
    return os.environ.get("TRANSFUSE_CI_SMALL") == "1"


def run_demo(*, seed: int = 0, epochs_scale: float = 1.0, train_size: Optional[int] = None) -> Dict[str, Any]:
    """Train both students for one seed; returns rows, curves and reliability inputs."""
    data_params = {"labelled": LABELLED if train_size is None else max(500, train_size // 12), "seed": seed}
    if train_size is not None:
        data_params.update(train_size=train_size, test_size=2000)
    with_unlabelled = build_data("fashion_mnist", data_params)
    labelled_only = build_data("fashion_mnist", {**data_params, "unlabelled": False})

    teacher = build_model("cnn", {}, in_shape=with_unlabelled.in_shape, num_classes=with_unlabelled.num_classes)
    load_weights(teacher, "builtin:fashion_mnist_cnn", what="teacher").eval()
    t0 = time.perf_counter()
    cache = build_or_load_logits_cache(
        teacher, with_unlabelled.train.inputs, with_unlabelled.train.index,
        cache_dir=Path(os.environ.get("TRANSFUSE_CACHE", "~/.cache/transfuse")).expanduser() / "teachers",
    )
    cache_seconds = time.perf_counter() - t0
    test = with_unlabelled.test

    runs = {
        "student, no teacher": (labelled_only, "ce", {}, None, max(1, round(CE_EPOCHS * epochs_scale))),
        "student, kd": (with_unlabelled, "kd", KD, CachedTeacher(cache), max(1, round(KD_EPOCHS * epochs_scale))),
    }
    rows: List[Dict[str, Any]] = []
    curves: Dict[str, List[Dict[str, Any]]] = {}
    reliability = {}
    t = evaluate(teacher, test, latency=True)
    teacher_test_logits = t["logits"]  # (N_test, C)
    rows.append(_row("teacher (CNN)", t, None))
    reliability["teacher (CNN)"] = (t["probs"], t["labels"])
    for name, (data, objective, params, source, epochs) in runs.items():
        torch.manual_seed(seed)
        student = build_model(STUDENT["name"], STUDENT["params"], in_shape=data.in_shape, num_classes=data.num_classes)
        result = train(
            student=student,
            teacher=source,
            objective=build_objective(objective, params),
            train_loader=make_loader(data.train, batch_size=128, seed=seed),
            epochs=epochs,
            lr=3e-3,
            schedule="onecycle",
            seed=seed,
            evaluate=lambda m: {"test_accuracy": evaluate(m, test)["accuracy"]},
        )
        m = evaluate(result.student, test, teacher_logits=teacher_test_logits, latency=True)
        rows.append(_row(name, m, result))
        curves[name] = result.history
        reliability[name] = (m["probs"], m["labels"])
    return {"rows": rows, "curves": curves, "reliability": reliability, "cache_seconds": cache_seconds}


def _row(name: str, m: Dict[str, Any], result) -> Dict[str, Any]:
    return {
        "model": name,
        "accuracy": m["accuracy"],
        "ece": m["ece"],
        "agreement": m.get("agreement", 1.0),
        "parameters": m["parameters"],
        "ms_per_1000": m["latency_ms_per_1000"],
        "train_s": None if result is None else round(result.train_seconds, 1),
    }


def print_table(rows: List[Dict[str, Any]], title: str) -> None:
    table = Table(title=title, header_style="bold")
    for col in ("model", "test accuracy", "ECE", "agreement w/ teacher", "parameters", "ms / 1,000 images", "train s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r["model"], f"{100 * r['accuracy']:.2f}%", f"{r['ece']:.4f}", f"{100 * r['agreement']:.2f}%",
            f"{r['parameters']:,}", f"{r['ms_per_1000']:.2f}", "shipped" if r["train_s"] is None else f"{r['train_s']:.1f}",
        )
    console().print(table)


def main(*, output: Path, seed: int = 0, epochs: Optional[int] = None) -> Dict[str, Any]:
    start = time.perf_counter()
    small = _small()
    scale = (epochs / KD_EPOCHS) if epochs else (0.34 if small else 1.0)
    out = run_demo(seed=seed, epochs_scale=scale, train_size=6000 if small else None)
    title = f"Fashion-MNIST, {LABELLED if not small else 'few'} labelled images: CNN teacher -> MLP student (seed {seed})"
    print_table(out["rows"], title)
    write_report(Path(output), rows=out["rows"], curves=out["curves"], reliability=out["reliability"], title=title)
    console().print(
        f"teacher logits over the training set: {out['cache_seconds']:.1f} s (cached for later runs)\n"
        f"report: {output}/report.md  ({time.perf_counter() - start:.0f} s in all)"
    )
    return out
