"""Ensembles of classifiers: accuracy, ECE and NLL of each fusion rule against the best single model.

usage: nice -n 5 python benchmarks/fusion_ensembles.py [--seeds 0 1 2] [--train-size 12000] [--epochs 2]

Per seed, four different small classifiers (three MLPs of different shapes and a small CNN) are
trained with cross-entropy on the first ``--train-size`` Fashion-MNIST training images (the seed
sets their initialisation and batch order); their weights are saved and `transfuse fuse`'s
``mode: classifiers`` (transfuse.fusion.modes.classifiers.run) fuses them with every rule on the
full 10,000-image test split. Prints a Markdown table: mean ± sample std over the seeds.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

MODELS = [
    ("mlp-64", "mlp", {"hidden": [64]}),
    ("mlp-256", "mlp", {"hidden": [256]}),
    ("mlp-128x128", "mlp", {"hidden": [128, 128]}),
    ("cnn-8-16", "cnn", {"channels": [8, 16], "hidden": 64}),
]
RULES = ["mean", "logit_mean", "product", "max", "dempster_shafer"]


def train(name, params, data, *, seed, epochs, batch_size=128, lr=2e-3):
    from transfuse.models import build_model

    torch.manual_seed(seed)
    model = build_model(name, params, in_shape=data.in_shape, num_classes=data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    x, y = data.train.inputs, data.train.labels
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def main() -> None:
    from transfuse.data import build_data
    from transfuse.fusion.modes.classifiers import run

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-size", type=int, default=12000)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data_spec = {"name": "fashion_mnist", "params": {"train_size": args.train_size}}
    data = build_data(data_spec["name"], data_spec["params"])
    per_run: dict = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            t0 = time.perf_counter()
            specs = []
            for label, name, params in MODELS:
                path = Path(tmp) / f"{label}-{seed}.safetensors"
                save_file(train(name, params, data, seed=seed, epochs=args.epochs).state_dict(), str(path))
                specs.append({"name": name, "params": params, "weights": str(path), "label": label})
            report = run({"mode": "classifiers", "models": specs, "rule": RULES, "data": data_spec,
                          "output": str(Path(tmp) / f"report-{seed}")})
            rows = report["rows"]
            best = max((r for r in rows if r["kind"] == "model"), key=lambda r: r["accuracy"])
            per_run.setdefault("best single", []).append(best)
            for r in rows:
                per_run.setdefault(r["run"], []).append(r)
            print(f"seed {seed}: {time.perf_counter() - t0:.0f} s  best single {best['run']} {100 * best['accuracy']:.2f}%  "
                  + "  ".join(f"{r['run']}={100 * r['accuracy']:.2f}%" for r in rows if r["kind"] == "fused"), flush=True)

    def cell(rows, key, scale=1.0, digits=2):
        vals = [scale * r[key] for r in rows]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.{digits}f} ± {sd:.{digits}f}"

    print(f"\n{len(args.seeds)} seeds {args.seeds}, Fashion-MNIST train {args.train_size} / test 10000, "
          f"{args.epochs} epochs each, {time.perf_counter() - start:.0f} s in all\n")
    print("| model / rule | test accuracy % | vs best single (points) | ECE | NLL |")
    print("|---|---|---|---|---|")
    best_acc = [r["accuracy"] for r in per_run["best single"]]
    for name, rows in per_run.items():
        gaps = [{"gap": 100 * (r["accuracy"] - b)} for r, b in zip(rows, best_acc)]
        gap = cell(gaps, "gap") if name.startswith("fused:") else ""
        print(f"| {name} | {cell(rows, 'accuracy', 100)} | {gap} | {cell(rows, 'ece', digits=4)} | {cell(rows, 'nll', digits=4)} |")


if __name__ == "__main__":
    main()
