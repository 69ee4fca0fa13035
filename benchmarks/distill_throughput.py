"""Throughput of transfuse's loop vs a plain hand-written PyTorch KD loop, measured in one run.

Same teacher (the builtin Fashion-MNIST CNN), student (MLP 784-64-10), data (Fashion-MNIST
train split), batch size (128), objective (KD, T=4, alpha=0.9) and optimizer (AdamW). The plain
loop is the fastest plain form: a random permutation sliced into batches, no DataLoader.
Runs alternate (plain, transfuse live, transfuse cached, ...) and the median of each is
reported, so that load from other processes hits all of them alike.

usage: python benchmarks/distill_throughput.py [--repeats 3] [--samples 20000]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from transfuse.cache import CachedTeacher, build_or_load_logits_cache
from transfuse.data import build_data
from transfuse.distill.loop import make_loader, train
from transfuse.models import build_model
from transfuse.objectives import build_objective
from transfuse.recipes.distill import load_weights
from transfuse.teachers import FrozenTeacher


def plain_kd_epoch(student, teacher, x, y, *, batch_size, lr, seed, T=4.0, alpha=0.9):
    """A hand-written KD epoch: what a user would write without a library."""
    opt = torch.optim.AdamW(student.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    student.train()
    start = time.perf_counter()
    for i in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        with torch.no_grad():
            t = teacher(xb)
        s = student(xb)
        soft = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True) * T * T
        keep = yb >= 0
        hard = F.cross_entropy(s[keep], yb[keep]) if keep.any() else s.sum() * 0
        loss = alpha * soft + (1 - alpha) * hard
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss)  # a plain loop reads the loss too (progress / NaN check)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20000, help="training samples per epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()

    data = build_data("fashion_mnist", {"labelled": 5000, "train_size": args.samples})
    teacher = build_model("cnn", {}, in_shape=data.in_shape, num_classes=10)
    load_weights(teacher, "builtin:fashion_mnist_cnn", what="teacher").eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, y = data.train.inputs, data.train.labels
    n_used = (len(x) // args.batch_size) * args.batch_size

    t0 = time.perf_counter()
    cache = build_or_load_logits_cache(teacher, x, data.train.index,
                                       cache_dir="/tmp/transfuse-bench-cache")
    cache_build = time.perf_counter() - t0

    def fresh_student(seed):
        torch.manual_seed(seed)
        return build_model("mlp", {"hidden": [64]}, in_shape=data.in_shape, num_classes=10)

    def ours(source, seed):
        r = train(student=fresh_student(seed), teacher=source, objective=build_objective("kd", {"temperature": 4.0, "alpha": 0.9}),
                  train_loader=make_loader(data.train, batch_size=args.batch_size, seed=seed), epochs=1, lr=1e-3,
                  schedule="constant", progress=False, seed=seed)
        return r.train_seconds

    times = {"plain loop, live teacher": [], "transfuse, live teacher": [], "transfuse, cached teacher": []}
    live = FrozenTeacher(teacher)
    cached = CachedTeacher(cache)
    for rep in range(args.repeats):
        times["plain loop, live teacher"].append(plain_kd_epoch(fresh_student(rep), teacher, x, y, batch_size=args.batch_size, lr=1e-3, seed=rep))
        times["transfuse, live teacher"].append(ours(live, rep))
        times["transfuse, cached teacher"].append(ours(cached, rep))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n_used} samples/epoch, batch {args.batch_size}, {args.repeats} repeats (median)")
    print(f"{'run':30s} {'s/epoch':>9s} {'samples/s':>10s}")
    for k, v in med.items():
        print(f"{k:30s} {v:9.2f} {n_used / v:10.0f}")
    print(f"transfuse live / plain live throughput: {med['plain loop, live teacher'] / med['transfuse, live teacher']:.3f}x (target >= 0.95x)")
    print(f"cached vs live epoch speed-up (transfuse): {med['transfuse, live teacher'] / med['transfuse, cached teacher']:.2f}x (target >= 3x)")
    print(f"one-off cache build (teacher over {len(x)} samples, or reuse): {cache_build:.2f} s")


if __name__ == "__main__":
    main()
