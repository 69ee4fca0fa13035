"""Per-step speed of transfuse's loop for small students vs a bare PyTorch KD loop, in one run.

The bare loop is what torchdistill's KDLoss runs in (benchmarks/_torchdistill_kd.py): teacher
logits looked up by sample id, slicing a permutation into batches (no DataLoader), KD (T=4,
alpha 0.9 on the soft term, batchmean), AdamW, zero_grad / backward / step, and no per-step
read of the loss. transfuse runs `train` with the same logits (a lookup teacher), data order,
objective and optimizer. Students: MLP 784-32-10 (0.03M parameters, the tiny one), 784-256-10
(0.2M) and 784-1024-1024-10 (1.9M). Runs alternate (bare, transfuse, bare, ...) and medians are
reported, so load from other processes hits both alike.

--clock process times both loops by this process's CPU time (time.process_time) instead of the
wall clock: on a machine shared with other jobs, waiting for a core then counts for neither.
The loop's own ``train_seconds`` is wall time, so with --clock process transfuse's epoch is timed
around the ``train`` call here (its set-up, about 0.006-0.01 ms per step of a 100-step epoch, counted against it).

usage: python benchmarks/distill_speed.py [--repeats 5] [--samples 12800] [--threads 1] [--clock wall|process] [--profile]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from transfuse.data import build_data
from transfuse.distill.loop import make_loader, train
from transfuse.models import build_model
from transfuse.objectives import build_objective
from transfuse.signals import Outputs

STUDENTS = {"mlp 784-32-10": [32], "mlp 784-256-10": [256], "mlp 784-1024-1024-10": [1024, 1024]}


class Lookup:
    """Teacher logits by sample id (what a logits cache gives)."""

    def __init__(self, table):
        self.table = table  # (N, C)

    def __call__(self, batch):
        return Outputs(logits=self.table[batch.index])


CLOCK = {"wall": time.perf_counter, "process": time.process_time}
clock = time.perf_counter


def bare_epoch(student, x, y, t, *, batch_size, seed, T=4.0, alpha=0.9, select=False):
    """One epoch of the bare loop; select: gather the batch with index_select (as transfuse's data
    sets do) instead of advanced indexing x[idx], which is slower for image batches on one thread."""
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.0)  # as transfuse's default
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 100_003))
    student.train()
    start = clock()
    for i in range(0, len(x) - batch_size + 1, batch_size):
        idx = order[i : i + batch_size]
        xb, yb, tb = (x.index_select(0, idx), y.index_select(0, idx), t.index_select(0, idx)) if select else (x[idx], y[idx], t[idx])
        s = student(xb)
        soft = F.kl_div(F.log_softmax(s / T, -1), F.softmax(tb / T, -1), reduction="batchmean") * T * T
        loss = alpha * soft + (1 - alpha) * F.cross_entropy(s, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return clock() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samples", type=int, default=12800)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated hidden sizes' student names (default: all)")
    ap.add_argument("--profile", action="store_true", help="cProfile one transfuse epoch of the tiny student")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall", help="wall time, or this process's CPU time")
    args = ap.parse_args()
    global clock
    clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    data = build_data("fashion_mnist", {"labelled": args.samples, "train_size": args.samples})
    x, y = data.train.inputs, data.train.labels
    # a teacher that knows the labels, with noise (N, 10): the student learns from it (random logits would
    # leave the loss flat, and transfuse's stall guard would rightly print a warning inside the timed epoch)
    teacher_logits = F.one_hot(y.clamp_min(0), 10).float() * 4 + torch.randn(len(x), 10, generator=torch.Generator().manual_seed(0))
    lookup = Lookup(teacher_logits)

    def student(hidden, seed):
        torch.manual_seed(seed)
        return build_model("mlp", {"hidden": hidden}, in_shape=data.in_shape, num_classes=10)

    def ours(hidden, seed):
        model, objective = student(hidden, seed), build_objective("kd", {"temperature": 4.0, "alpha": 0.9})
        loader = make_loader(data.train, batch_size=args.batch_size, seed=seed)
        start = clock()
        result = train(student=model, teacher=lookup, objective=objective, train_loader=loader, epochs=1, lr=1e-3,
                       progress=False, seed=seed)
        return result.train_seconds if args.clock == "wall" else clock() - start

    if args.profile:
        import cProfile
        import pstats

        ours([32], 0)
        prof = cProfile.Profile()
        prof.enable()
        ours([32], 0)
        prof.disable()
        st = pstats.Stats(prof); st.sort_stats("tottime").print_stats(30)
        return
    steps = len(x) // args.batch_size
    names = [n for n in STUDENTS if not args.only or n in args.only.split(",")]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {steps} steps/epoch of batch {args.batch_size}, "
          f"{args.repeats} repeats (median), {args.clock} clock")
    print("| student | params | bare loop ms/step | bare loop, index_select gather | transfuse ms/step | transfuse / bare | transfuse / bare index_select |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        hidden = STUDENTS[name]
        n_params = sum(p.numel() for p in student(hidden, 0).parameters())
        bare_epoch(student(hidden, 0), x, y, teacher_logits, batch_size=args.batch_size, seed=0)  # warm-up
        ours(hidden, 0)
        bare, select, mine = [], [], []
        for rep in range(args.repeats):
            bare.append(bare_epoch(student(hidden, rep), x, y, teacher_logits, batch_size=args.batch_size, seed=rep))
            select.append(bare_epoch(student(hidden, rep), x, y, teacher_logits, batch_size=args.batch_size, seed=rep, select=True))
            mine.append(ours(hidden, rep))
        b, bs, m = statistics.median(bare), statistics.median(select), statistics.median(mine)
        ms = lambda v: f"{v / steps * 1e3:.3f}"
        print(f"| {name} | {n_params / 1e6:.2f}M | {ms(b)} | {ms(bs)} | {ms(m)} | {b / m:.3f}x | {bs / m:.3f}x |", flush=True)


if __name__ == "__main__":
    main()
