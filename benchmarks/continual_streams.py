"""Every continual method on the issue's streams, 3 seeds: ACC, BWT, FWT, forgetting (mean ± std).

usage: python benchmarks/continual_streams.py SCENARIO [--seeds 0 1 2] [--json out.json]
SCENARIO: class | task | domain (Split / permuted Fashion-MNIST, 5 tasks) | text (WordNet, 5 tasks x 2
lexical categories, text_bow features). Each seed rebuilds the stream (its subsets, permutations) and
trains every method from the same start. Prints a Markdown table for docs/benchmarks/continual.md.
"""
from __future__ import annotations

import argparse
import json
import time

from transfuse.continual.compare import compare

COMMON = ["finetune", "ewc", "lwf", "er", "der", "cuber"]
STREAMS = {
    "class": ({"scenario": "class", "dataset": "fashion_mnist", "tasks": 5, "train_per_task": 1500, "test_per_task": 500},
              COMMON + [{"name": "lingocl", "params": {"encoder": "minilm"}}, "joint"]),
    "task": ({"scenario": "task", "dataset": "fashion_mnist", "tasks": 5, "train_per_task": 1500, "test_per_task": 500},
             COMMON + ["exssnet", "joint"]),
    "domain": ({"scenario": "domain", "dataset": "fashion_mnist", "tasks": 5, "transform": "permuted",
                "train_per_task": 1500, "test_per_task": 500},
               COMMON + ["vida", "joint"]),
    "text": ({"scenario": "class", "dataset": "text_bow", "tasks": 5,
              "params": {"categories": ["noun.animal", "noun.plant", "noun.food", "noun.artifact", "noun.person",
                                        "noun.location", "verb.motion", "verb.communication", "noun.body", "noun.time"],
                         "per_class": 500, "features": 2048}},
             COMMON + ["joint"]),
}
COLUMNS = ("acc", "bwt", "fwt", "forgetting_max")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(STREAMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    stream, methods = STREAMS[args.scenario]
    start = time.perf_counter()
    out = compare(stream, methods, seeds=args.seeds, model="mlp", model_params={"hidden": [256]}, epochs=args.epochs,
                  batch_size=64, lr=1e-3)
    print(f"stream {json.dumps(stream)}; seeds {args.seeds}; mlp 256 hidden; {args.epochs} epochs per task; "
          f"{time.perf_counter() - start:.0f} s in all\n")
    print("| method | " + " | ".join(COLUMNS) + " | s/seed |")
    print("|---|" + "---|" * (len(COLUMNS) + 1))
    for label, s in out["methods"].items():
        cells = [f"{s['mean'][k]:.3f} ± {s['std'][k]:.3f}" for k in COLUMNS]
        print(f"| {label} | " + " | ".join(cells) + f" | {s['seconds']:.0f} |")
    if args.json:
        summary = {k: {"mean": v["mean"], "std": v["std"], "R": v["R"]} for k, v in out["methods"].items()}
        with open(args.json, "w") as f:
            json.dump({"stream": stream, "seeds": args.seeds, "methods": summary}, f, indent=1)


if __name__ == "__main__":
    main()
