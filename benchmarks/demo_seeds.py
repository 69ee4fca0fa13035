"""The demo's table over several seeds: mean and spread (sample std) of each column.

usage: python benchmarks/demo_seeds.py [--seeds 0 1 2]
Each seed changes the labelled subset, the student's initialisation and the batch order; the
teacher is the shipped one. Prints a Markdown table for docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import statistics
import time

from transfuse.recipes.demo import run_demo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    per_model: dict = {}
    start = time.perf_counter()
    for seed in args.seeds:
        t0 = time.perf_counter()
        out = run_demo(seed=seed)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s  " + "  ".join(f"{r['model']}={100 * r['accuracy']:.2f}%" for r in out["rows"]), flush=True)
        for r in out["rows"]:
            per_model.setdefault(r["model"], []).append(r)

    def cell(rows, key, scale=1.0, digits=2):
        vals = [scale * r[key] for r in rows]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.{digits}f} ± {sd:.{digits}f}"

    print(f"\n{len(args.seeds)} seeds {args.seeds}, {time.perf_counter() - start:.0f} s in all\n")
    print("| model | test accuracy % | ECE | agreement with teacher % | parameters | ms / 1,000 images | train s |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in per_model.items():
        train_s = "shipped" if rows[0]["train_s"] is None else cell(rows, "train_s", digits=1)
        print(f"| {name} | {cell(rows, 'accuracy', 100)} | {cell(rows, 'ece', digits=4)} | {cell(rows, 'agreement', 100)} "
              f"| {rows[0]['parameters']:,} | {cell(rows, 'ms_per_1000')} | {train_s} |")
    kd = [r["accuracy"] for r in per_model["student, kd"]]
    ce = [r["accuracy"] for r in per_model["student, no teacher"]]
    gaps = [100 * (a - b) for a, b in zip(kd, ce)]
    spread = max(statistics.stdev([100 * v for v in kd]), statistics.stdev([100 * v for v in ce])) if len(kd) > 1 else 0.0
    print(f"\nkd - no teacher: {statistics.mean(gaps):+.2f} points (per seed {', '.join(f'{g:+.2f}' for g in gaps)}); "
          f"largest seed-to-seed std of the two: {spread:.2f} points")


if __name__ == "__main__":
    main()
