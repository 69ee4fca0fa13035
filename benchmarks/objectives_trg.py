"""trg on CNN feature cells vs kd: a small CNN student distilled from the table's CNN teacher.

    .venv/bin/python benchmarks/objectives_trg.py              # 3 seeds, 10 epochs (a few minutes on 2 cores)
    .venv/bin/python benchmarks/objectives_trg.py --quick      # smoke run
    .venv/bin/python benchmarks/objectives_trg.py --epochs 30 --only "no-teacher,kd,trg (cells" --out docs/benchmarks/objectives_trg_30ep.json

In the main table (benchmarks/objectives_table.py) the student is an MLP, so ``trg`` there has one
"token" per image (the penultimate vector) and its token graph is only a graph over the batch. Here
both models have feature *cells*: the teacher is the table's cached CNN (conv 16, conv 32, hidden 64;
``features`` gives (B, 32, 7, 7), 49 tokens of width 32) and the student a smaller CNN (conv 8,
conv 16, hidden 32; ``features`` gives (B, 16, 7, 7), 49 tokens of width 16, projected to 32 by
trg's own linear projector). trg's node, edge (over at most 512 tokens of the batch) and per-image
contextual terms then act on real token sets. Rows: no teacher (CE), kd (T 4, alpha 0.9), trg on
the cells (its defaults: alpha 0.9, T 4, weights 1, tau 0.1), trg on the penultimate vectors (one
token per image, as in the main table). Same data (5,000 labelled Fashion-MNIST images), the same
student initialisation per seed, AdamW lr 3e-3 one-cycle, batch 128, through transfuse's loop,
live teacher. Columns as in the main table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from objectives_table import LiveTeacher, fmt, logits_of, measure, shifted, summarise, teacher_model  # noqa: E402
from transfuse.data import build_data  # noqa: E402
from transfuse.distill.loop import make_loader, train  # noqa: E402
from transfuse.models import build_model  # noqa: E402
from transfuse.objectives import build_objective  # noqa: E402
from transfuse.objectives._features import forward_with_features  # noqa: E402

ROWS = {
    "no-teacher": ("ce", {}),
    "kd": ("kd", {"temperature": 4.0, "alpha": 0.9}),
    "trg (cells, 49 tokens)": ("trg", {"student_layer": "features", "teacher_layer": "features", "teacher_dim": 32}),
    "trg (penultimate, 1 token)": ("trg", {}),
}


def run(objective_name: str, params: dict, *, data, teacher, epochs: int, seed: int):
    torch.manual_seed(seed)
    student = build_model("cnn", {"channels": [8, 16], "hidden": 32}, in_shape=(1, 28, 28), num_classes=10)
    objective = build_objective(objective_name, params)
    source = LiveTeacher(teacher, objective.teacher_features) if objective.needs_teacher else None
    paths = tuple(objective.student_features)

    def forward(model, batch):
        return forward_with_features(model, batch.inputs, paths)

    objective.bind(student, teacher=teacher)
    t0 = time.perf_counter()
    result = train(student=student, teacher=source, objective=objective, train_loader=make_loader(data.train, batch_size=128, seed=seed),
                   epochs=epochs, optimizer="adamw", lr=3e-3, schedule="onecycle", seed=seed, forward=forward, progress=False,
                   cpu=True, log_every=10**9)
    return result.student, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated row-name prefixes (e.g. 'kd,trg (cells')")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "objectives_trg.json"))
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 1
    torch.set_num_threads(1)
    params = {"labelled": 5000, "unlabelled": False}
    if args.quick:
        params.update(train_size=8000, test_size=2000, labelled=1000)
    data = build_data("fashion_mnist", params)
    full = build_data("fashion_mnist", {"test_size": 2000} if args.quick else {})
    teacher = teacher_model(full, name="teacher_cnn", quick=args.quick)
    teacher_test = logits_of(teacher, data.test.inputs)
    t_acc = float((teacher_test.argmax(-1) == data.test.labels).float().mean())
    test_shifted = shifted(data.test.inputs)
    print(f"teacher CNN(16,32) {t_acc * 100:.2f}% -> student CNN(8,16) hidden 32, {len(data.train)} labelled images, "
          f"{args.epochs} epochs, seeds {list(range(args.seeds))}", flush=True)
    print("| method | accuracy % | ECE % | agreement % | shifted acc % | s/run |\n|---|---|---|---|---|---|", flush=True)
    out: Dict[str, Any] = {"settings": vars(args), "torch": torch.__version__, "teacher_accuracy": t_acc, "rows": {}}
    started = time.perf_counter()
    rows = {r: v for r, v in ROWS.items() if not args.only or any(r.startswith(o) for o in args.only.split(","))}
    for row, (name, p) in rows.items():
        runs, times = [], []
        for seed in range(args.seeds):
            student, secs = run(name, p, data=data, teacher=teacher, epochs=args.epochs, seed=seed)
            runs.append(measure(student, data.test, teacher_test, test_shifted))
            times.append(secs)
        s = summarise(runs)
        s["seconds"] = statistics.fmean(times)
        out["rows"][row] = s
        print(f"| {row} | {fmt(s['accuracy'])} | {fmt(s['ece'])} | {fmt(s['agreement'])} | {fmt(s['shifted_accuracy'])} | "
              f"{s['seconds']:.1f} |", flush=True)
    out["wall_seconds"] = time.perf_counter() - started
    print(f"total wall time {out['wall_seconds']:.0f}s")
    if not args.quick:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
