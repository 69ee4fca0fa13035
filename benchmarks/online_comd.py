"""CoMD competitive rounds vs the same students tuned on the teacher's answers without competition.

usage: OMP_NUM_THREADS=1 python benchmarks/online_comd.py [--rounds 3] [--out /tmp/online_comd_bench]

The shipped ``online_comd`` recipe (teacher SmolLM2-135M-Instruct, also the judge; students built from
6 and 4 of its 30 layers; 16 plain-text pydoc prompts of 16 tokens; 16 new tokens; AdamW lr 5e-4,
batch 8) run three ways through :func:`transfuse.recipes.online_lm.run`:

- comd: each round every prompt plus one more copy of each prompt the student lost (``hard_repeats: 1``);
- no competition: every prompt once per round (``hard_repeats: 0``), i.e. sequence-level KD in rounds;
- no competition, 2 epochs: the same, two epochs per round, about the step budget comd spends when a
  student loses every prompt (it then trains on 2 x 16 rows per round).

Per round and student: the judge score (mean log-probability of the student's greedy answers under
the teacher), the win rate (answers the judge scores at least as high as the teacher's own), the
held-out perplexity and the teacher's NLL of the student's sampled continuations of held-out prompts.
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from transfuse.config import load_config
from transfuse.recipes.distill import resolve_recipe
from transfuse.recipes.online_lm import OnlineLMConfig, run

MODES = {
    "comd": ["method.params.hard_repeats=1"],
    "no competition": ["method.params.hard_repeats=0"],
    "no competition, 2 epochs": ["method.params.hard_repeats=0", "method.params.epochs_per_round=2"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="/tmp/online_comd_bench")
    args = parser.parse_args()
    rows = []
    for mode, overrides in MODES.items():
        out = Path(args.out) / mode.replace(" ", "_").replace(",", "")
        shutil.rmtree(out, ignore_errors=True)
        cfg = load_config(OnlineLMConfig, resolve_recipe("online_comd"),
                          [f"method.params.rounds={args.rounds}", f"output={out}", *overrides])
        t0 = time.perf_counter()
        run(cfg)
        seconds = time.perf_counter() - t0
        curves = json.loads((out / "report" / "metrics.json").read_text())["curves"]
        for student, points in curves.items():
            for p in points:
                rows.append((mode, student, p["round"], p["pool"], p["judge_score"], p["win_rate"], p["held_out_ppl"], p["teacher_nll"]))
        print(f"{mode}: {seconds:.0f} s wall", flush=True)
        shutil.rmtree(out, ignore_errors=True)  # ~1 GB of round files
    print("| mode | student | round | rows trained | judge score | win rate | held-out ppl | teacher NLL |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, student, r, pool, judge, win, ppl, nll in rows:
        print(f"| {mode} | {student} | {r} | {pool if r else '-'} | {judge:.3f} | {win:.2f} | {ppl:,.0f} | {nll:.3f} |")


if __name__ == "__main__":
    main()
