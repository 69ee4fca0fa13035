"""Shared by the in-memory kernel benchmarks: the median wall time of a call."""
from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int = 7) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls, after one call to compile / warm up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
