"""Continual transfer: task streams, a method's hooks around a per-task loop, and the accuracy matrix's metrics.

    from transfuse.continual import build_stream, run
    stream = build_stream(scenario="class", dataset="fashion_mnist", tasks=5, train_per_task=1000)
    result = run(stream, "er", epochs=2)
    result.R, result.metrics["acc"], result.metrics["bwt"]
"""
from __future__ import annotations

from . import metrics
from ._base import ContinualMethod
from .api import ContinualResult, run
from .methods import build_method, methods
from .streams import Stream, Task, build_stream

__all__ = ["ContinualMethod", "ContinualResult", "Stream", "Task", "build_method", "build_stream", "methods", "metrics", "run"]
