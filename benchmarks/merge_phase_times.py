"""Where a fused merge's time goes: seconds inside each kernel and in unmapping, in-process.

Runs ``transfuse.merge`` on a config ``--repeats`` times in one process (the first run also loads
the kernels; inputs read into the page cache before each run) and prints, per run, the wall
time, the engine's own time and the seconds spent in each fused kernel and in
``SafetensorsSource.release`` (MADV_DONTNEED of merged pages). Kernel times include the page
faults of the inputs they are first to touch.

    .venv/bin/python benchmarks/merge_phase_times.py .bench/mr/ties.yaml --repeats 3
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from transfuse.merge import io, kernels
from transfuse.merge.api import merge

KERNELS = ("hist_sample", "hist_range", "hist_low", "count_below", "ties", "weighted")


def _timed(owner, name: str, totals: collections.Counter) -> None:
    real = getattr(owner, name)

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - t

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    inputs = [cfg["base_model"]] if cfg.get("base_model") else []
    inputs += [m["model"] for m in cfg["models"]]
    totals: collections.Counter = collections.Counter()
    for name in KERNELS:
        _timed(kernels, name, totals)
    _timed(io.SafetensorsSource, "release", totals)
    for run in range(args.repeats):
        shutil.rmtree(cfg["output"], ignore_errors=True)
        subprocess.run(["sh", "-c", "cat " + " ".join(f"'{p}'/*.safetensors" for p in inputs) + " > /dev/null"], check=True)
        totals.clear()
        t = time.perf_counter()
        out = merge(args.config)
        wall = time.perf_counter() - t
        engine = json.loads((out / "transfuse_merge.json").read_text())["merge_seconds"]
        parts = "  ".join(f"{k} {v:.2f}" for k, v in sorted(totals.items()))
        print(f"run {run + 1}: wall {wall:.2f} s, engine {engine:.2f} s; seconds in: {parts}", flush=True)
    shutil.rmtree(cfg["output"], ignore_errors=True)


if __name__ == "__main__":
    main()
