"""Online distillation on Fashion-MNIST: dml and bdkd vs independent training and offline kd (and takd vs kd).

usage: OMP_NUM_THREADS=1 python benchmarks/online_mutual.py [--seeds 0 1 2] [--epochs 10] [--labelled 5000]

Two students of different capacity, a small CNN ("large", 106k parameters) and an MLP ("small", 25k), on
5,000 labelled Fashion-MNIST training images, tested on the 10,000 test images; per seed:

- independent: each trained alone with cross-entropy;
- dml: trained together with transfuse's ``dml`` (Zhang et al. 2018);
- bdkd: trained together with ``bdkd`` (the CNN as the online teacher);
- kd: the MLP distilled offline (``kd``, T=4, alpha=0.9) from the independently trained CNN;
- takd: CNN -> assistant (a narrower CNN, 27k) -> the MLP, offline ``kd`` stages (Mirzadeh et al. 2020),
  against kd straight from the CNN (the "kd" row; same student, same budget per stage).

Every run uses the same optimiser (AdamW, one-cycle, lr 3e-3), batch 64 and epochs; accuracy and
ECE (15 bins) of each model on the test set, and of each pair's ensemble (mean of the two models'
probabilities), mean +- std over seeds. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List

import torch

from transfuse.data import build_data
from transfuse.distill.loop import make_loader, train
from transfuse.models import build_model
from transfuse.objectives import build_objective
from transfuse.online.loop import train_students
from transfuse.recipes.online import measure
from transfuse.teachers import FrozenTeacher

LARGE = ("cnn", {"channels": [16, 32], "hidden": 64})
SMALL = ("mlp", {"hidden": [32]})
ASSISTANT = ("cnn", {"channels": [8, 16], "hidden": 32})


def model(spec, data, seed):
    torch.manual_seed(seed)
    return build_model(spec[0], spec[1], in_shape=data.in_shape, num_classes=data.num_classes)


def scores(models, data) -> List[Dict[str, float]]:
    """Each model's accuracy / ECE on the test split, then (for several) their ensemble's (mean of probabilities)."""
    rows = measure(models, data.test, batch_size=2000, bins=15)
    return [{"accuracy": r["accuracy"], "ece": r["ece"]} for r in rows]


def run_seed(seed: int, args) -> Dict[str, Dict[str, float]]:
    data = build_data("fashion_mnist", {"labelled": args.labelled, "unlabelled": False, "seed": seed})
    loop = dict(epochs=args.epochs, lr=3e-3, schedule="onecycle", seed=seed)
    loader = lambda: make_loader(data.train, batch_size=64, seed=seed)  # noqa: E731
    out: Dict[str, Dict[str, float]] = {}

    def alone(spec, k):
        return train(student=model(spec, data, seed + k), teacher=None, objective=build_objective("ce"),
                     train_loader=loader(), progress=False, **loop).student

    large, small = alone(LARGE, 0), alone(SMALL, 1)
    for name, r in zip(("independent large", "independent small", "independent ensemble"), scores([large, small], data)):
        out[name] = r
    for method in ("dml", "bdkd"):
        pair = train_students([model(LARGE, data, seed), model(SMALL, data, seed + 1)], method, loader(), **loop).students
        for role, r in zip(("large", "small", "ensemble"), scores(pair, data)):
            out[f"{method} {role}"] = r

    def kd_from(teacher, spec, k):
        return train(student=model(spec, data, seed + k), teacher=FrozenTeacher(teacher), progress=False, train_loader=loader(),
                     objective=build_objective("kd", {"temperature": 4.0, "alpha": 0.9}), **loop).student

    kd_small = kd_from(large, SMALL, 1)
    out["kd small (from independent large)"] = scores([kd_small], data)[0]
    for p in large.parameters():
        p.requires_grad_(True)
    if not args.no_takd:
        assistant = kd_from(large, ASSISTANT, 2)
        out["takd assistant"] = scores([assistant], data)[0]
        out["takd small (large -> assistant -> small)"] = scores([kd_from(assistant, SMALL, 1)], data)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--labelled", type=int, default=5000)
    parser.add_argument("--no-takd", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    per_seed = [run_seed(s, args) for s in args.seeds]
    print(f"Fashion-MNIST, {args.labelled} labelled, {args.epochs} epochs, seeds {args.seeds}; "
          f"large = {LARGE[0]} {LARGE[1]}, small = {SMALL[0]} {SMALL[1]}, assistant = {ASSISTANT[0]} {ASSISTANT[1]}\n")
    print("| model | accuracy | ECE |")
    print("|---|---|---|")
    for name in per_seed[0]:
        acc = [r[name]["accuracy"] for r in per_seed]
        ece = [r[name]["ece"] for r in per_seed]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        print(f"| {name} | {statistics.mean(acc):.4f} ± {sd(acc):.4f} | {statistics.mean(ece):.4f} ± {sd(ece):.4f} |")
    print("\nper seed (accuracy / ECE):")
    for s, r in zip(args.seeds, per_seed):
        print(f"seed {s}: " + "; ".join(f"{k} {v['accuracy']:.4f}/{v['ece']:.4f}" for k, v in r.items()))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
