"""``transfuse.continual.run``: train a method along a stream and record the accuracy matrix."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from ..errors import TransfuseError
from . import metrics as M
from ._base import ContinualMethod
from .loop import accuracy, evaluate_all, train_task
from .methods import build_method
from .streams import Stream


@dataclass
class ContinualResult:
    """R (T, T): R[i][j] = accuracy on task j after training on task i; b (T,): the untrained model's;
    curves: per task, accuracy on it after each epoch of training on it; timeline: accuracy on every
    task after every epoch of the run (E_total, T); ste / ste_curves: single-task experts, when run."""

    method: str
    R: np.ndarray
    b: np.ndarray
    curves: List[List[float]]
    timeline: np.ndarray
    metrics: Dict[str, float]
    ste: Optional[np.ndarray] = None
    ste_curves: Optional[List[List[float]]] = None
    seconds: float = 0.0
    stream: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        out = {"method": self.method, "R": self.R.tolist(), "b": self.b.tolist(), "curves": self.curves,
               "timeline": self.timeline.tolist(), "metrics": self.metrics, "seconds": self.seconds, "stream": self.stream}
        if self.ste is not None:
            out["ste"] = self.ste.tolist()
            out["ste_curves"] = self.ste_curves
        return out


def _model_factory(model: str | Callable[[], nn.Module], params: Optional[Dict[str, Any]], stream: Stream):
    if callable(model):
        return model
    from ..models import models
    from ..registry import build

    def make() -> nn.Module:
        return build(models, model, params or {}, in_shape=stream.in_shape, num_classes=stream.num_classes)

    make()  # a wrong name or parameter fails now, before any training
    return make


def run(
    stream: Stream,
    method: str | ContinualMethod = "finetune",
    *,
    method_params: Optional[Dict[str, Any]] = None,
    model: str | Callable[[], nn.Module] = "mlp",
    model_params: Optional[Dict[str, Any]] = None,
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    experts: bool = False,
    denominator: M.Denominator = "T-1",
    progress: Optional[Callable[[str], None]] = None,
) -> ContinualResult:
    """Train ``method`` on ``stream``'s tasks in order; R, metrics and curves come back in the result.

    model: a models-registry name (built with the stream's in_shape and num_classes) or a factory;
    experts: also train one fresh model per task alone (single-task experts, for l2metrics' ratios).
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise TransfuseError(f"epochs and batch_size must be >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    make = _model_factory(model, model_params, stream)
    name = method if isinstance(method, str) else getattr(method, "registry_name", type(method).__name__)
    if isinstance(method, str):
        method = build_method(method, method_params)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    net = method.setup(make(), stream, gen)
    known = stream.task_ids_known
    T = len(stream)
    b = np.array(evaluate_all(net, method, stream.tasks, task_id_known=known))
    R = np.zeros((T, T))
    curves: List[List[float]] = []
    timeline: List[List[float]] = []
    for i, task in enumerate(stream.tasks):
        method.before_task(net, task)
        curve: List[float] = []

        def on_epoch(_epoch: int) -> None:
            row = evaluate_all(net, method, stream.tasks, task_id_known=known)
            timeline.append(row)
            curve.append(row[i])

        train_task(net, method, task, method.train_set(task, stream.tasks[:i]), epochs=epochs, batch_size=batch_size,
                   lr=lr, generator=gen, on_epoch=on_epoch)
        method.after_task(net, task)
        R[i] = evaluate_all(net, method, stream.tasks, task_id_known=known)
        curves.append(curve)
        if progress:
            progress(f"{name}: task {i + 1}/{T} done, accuracies {np.round(R[i], 3).tolist()}")
    ste = ste_curves = None
    if experts:
        ste_list, ste_curves = [], []
        for i, task in enumerate(stream.tasks):
            expert = build_method("finetune")
            torch.manual_seed(seed + 1000 + i)
            egen = torch.Generator().manual_seed(seed + 1000 + i)
            enet = expert.setup(make(), stream, egen)
            ecurve: List[float] = []
            train_task(enet, expert, task, task.train, epochs=epochs, batch_size=batch_size, lr=lr, generator=egen,
                       on_epoch=lambda _e: ecurve.append(accuracy(enet, expert, task, task_id_known=known)))
            ste_list.append(ecurve[-1])
            ste_curves.append(ecurve)
        ste = np.array(ste_list)
    metrics = M.all_metrics(R, b, curves=curves, ste=ste, ste_curves=ste_curves, denominator=denominator)
    return ContinualResult(name, R, b, curves, np.array(timeline), metrics, ste, ste_curves,
                           time.perf_counter() - start, dict(stream.description))
