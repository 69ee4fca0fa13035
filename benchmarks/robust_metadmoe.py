"""metadmoe vs a student trained on the pooled domains vs the experts' ensemble: accuracy on an unseen domain.

usage: OMP_NUM_THREADS=1 python benchmarks/robust_metadmoe.py [--seeds 0 1 2] [--epochs 15] [--test-rotate 90]

Rotated MNIST-5k (the `domains` data set): the 4,000 training images are shared out disjointly
among three train domains rotated 0, 30 and 60 degrees; the unseen test domain is the 1,000 test
images rotated ``--test-rotate`` degrees. Per seed: one expert per train domain (MLP 784-128-10,
cross-entropy on its domain alone, the shipped `metadmoe_expert` recipe); a student MLP 784-64-10
trained with cross-entropy on the pooled domains (`metadmoe_expert` with domain null); the mean
ensemble of the three experts (probabilities averaged); and the same student trained by
`metadmoe` (the shipped recipe) from the three experts, reported without and with test-time
adaptation (one inner step on each unlabelled test batch of 64), plus its aggregator's own
accuracy. AdamW lr 3e-3 one-cycle, batch 64, ``--epochs`` epochs for every model.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _robust import cell, run_recipe, table  # noqa: E402


def ensemble_accuracy(expert_files, data_params) -> tuple:
    """(mean-ensemble accuracy, best single expert accuracy) on the unseen domain."""
    from transfuse.data import build_data
    from transfuse.eval import evaluate
    from transfuse.models import build_model
    from transfuse.recipes.distill import load_weights
    from transfuse.teachers import EnsembleModel

    data = build_data("domains", data_params)
    experts = [load_weights(build_model("mlp", {"hidden": [128]}, in_shape=data.in_shape, num_classes=10), str(f), what="expert")
               for f in expert_files]
    single = max(evaluate(e, data.test)["accuracy"] for e in experts)
    return evaluate(EnsembleModel(experts, "mean"), data.test)["accuracy"], single


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--test-rotate", type=float, default=90.0)
    args = ap.parse_args()
    params = {"base": "mnist5k", "train": [{"rotate": 0}, {"rotate": 30}, {"rotate": 60}], "test": {"rotate": args.test_rotate}}
    data = f"data.params={{base: mnist5k, train: [{{rotate: 0}}, {{rotate: 30}}, {{rotate: 60}}], test: {{rotate: {args.test_rotate}}}}}"
    names = ["best single expert", "ensemble of the 3 experts (mean)", "student on pooled domains", "metadmoe student, no adaptation",
             "metadmoe student + test-time adaptation", "metadmoe aggregator"]
    acc = {n: [] for n in names}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed in args.seeds:
            common = [data, f"train.epochs={args.epochs}", f"train.seed={seed}"]
            experts = []
            for d in range(3):
                run_recipe("metadmoe_expert", common + [f"data.params.domain={d}"], root / f"e{seed}_{d}")
                experts.append(root / f"e{seed}_{d}" / "student.safetensors")
            ens, single = ensemble_accuracy(experts, {**params})
            pooled = run_recipe("metadmoe_expert", common + ["data.params.domain=null", "student.params={hidden: [64]}"], root / f"pooled{seed}")
            members = ", ".join(f"{{name: mlp, params: {{hidden: [128]}}, weights: '{f}', cache: false}}" for f in experts)
            meta = run_recipe("metadmoe", common + [f"teacher.ensemble=[{members}]"], root / f"meta{seed}")
            for n, v in zip(names, [single, ens, pooled["accuracy"], meta["accuracy"], meta["tta_accuracy"], meta["aggregator_accuracy"]]):
                acc[n].append(v)
            print(f"seed {seed} done at {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\n{len(args.seeds)} seeds, {args.epochs} epochs, unseen domain rotated {args.test_rotate:g} degrees; {time.perf_counter() - start:.0f} s wall\n")
    print(table(["model", f"accuracy % on the unseen domain ({args.test_rotate:g} degrees)"], [[n, cell(v)] for n, v in acc.items()]))


if __name__ == "__main__":
    main()
