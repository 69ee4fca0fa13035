"""Data loading and evaluation overheads, measured in one run.

1. fashion_mnist: first build in a fresh process (gzip + idx parse + normalise + fingerprint),
   then a second build in the same process (parsed arrays cached), against the bare floor of
   reading the four gzip files with numpy.
2. evaluate(): the CNN teacher over the 10,000 test images with all metrics, against a plain
   hand-written inference loop (same batch size) that only collects logits.
3. latency_ms_per_1000 of the zoo models on 1,000 Fashion-MNIST images.

    .venv/bin/python benchmarks/data_eval.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import gzip
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def floor_read(folder: Path) -> float:
    t0 = time.perf_counter()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(folder / name, "rb") as f:
            np.frombuffer(f.read(), dtype=np.uint8)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)

    from transfuse.data import build_data
    from transfuse.data import fashion_mnist as fm

    floor = min(floor_read(Path(fm.DEBIAN_DIR)) for _ in range(args.repeats))
    t0 = time.perf_counter()
    data = build_data("fashion_mnist")
    first = time.perf_counter() - t0
    again = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        build_data("fashion_mnist")
        again.append(time.perf_counter() - t0)
    print(f"fashion_mnist first build     {first:6.2f} s  ({first / floor:4.2f}x the bare gzip read, {floor:.2f} s)")
    print(f"fashion_mnist cached rebuild  {statistics.median(again):6.2f} s  ({statistics.median(again) / first:4.2f}x the first build)")

    from transfuse.eval import evaluate, latency_ms_per_1000
    from transfuse.models import build_model

    teacher = build_model("cnn", None, in_shape=data.in_shape, num_classes=10).eval()
    test = data.test

    def plain() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            torch.cat([teacher(test.inputs[i : i + 1000]) for i in range(0, len(test), 1000)])
        return time.perf_counter() - t0

    def ours() -> float:
        t0 = time.perf_counter()
        evaluate(teacher, test, batch_size=1000)
        return time.perf_counter() - t0

    plain_t, ours_t = [], []
    for _ in range(args.repeats):  # interleaved so load changes hit both
        plain_t.append(plain())
        ours_t.append(ours())
    p, o = statistics.median(plain_t), statistics.median(ours_t)
    print(f"evaluate() cnn on 10k test     {o:6.2f} s vs plain loop {p:.2f} s: {o / p:4.2f}x (metrics included)")

    for name, params in (("mlp", {"hidden": [32]}), ("mlp", None), ("cnn", None), ("resnet", None)):
        model = build_model(name, params, in_shape=data.in_shape, num_classes=10)
        ms = latency_ms_per_1000(model, test.inputs[:1000], repeats=args.repeats)
        print(f"latency {name:6s} {str(params or ''):16s} {ms:8.1f} ms / 1000 images, {sum(p.numel() for p in model.parameters()):,} params")
    print(f"torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
