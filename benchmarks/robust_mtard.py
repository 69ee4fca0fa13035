"""mtard vs kd from the clean teacher vs PGD adversarial training alone: clean and PGD-10 robust accuracy.

usage: OMP_NUM_THREADS=1 python benchmarks/robust_mtard.py [--seeds 0 1 2] [--epochs 10] [--eps 0.1]

Fashion-MNIST, the 5,000 labelled training images only (the same for every row), student MLP
784-64-10, AdamW lr 3e-3 one-cycle, batch 128, ``--epochs`` epochs, through `transfuse distill`
with the shipped recipes (kd, adv_train, mtard) and overrides. Teachers: the clean one is the
built-in CNN (trained naturally on all 60k images); the robust one is an MLP 784-256-10 trained by
``adv_train`` (PGD-10) on the same 5k images, once (seed 0) for all seeds. eps is a fraction of the pixel range
(0.1 = 25.5/255) for training attacks and the evaluation; the evaluation is PGD-10 (random start,
step 2.5 eps / 10) on the first 1,000 test images, clean accuracy on all 10,000.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _robust import builtin_cnn, cell, run_recipe, table  # noqa: E402

DATA = ["data.name=fashion_mnist", "data.params={labelled: 5000, unlabelled: false, seed: 0}"]


def builtin_cnn_metrics(eps: float) -> dict:
    """Clean and PGD-10 accuracy of the built-in CNN, measured as the recipe measures a student."""
    from transfuse.data import build_data
    from transfuse.eval import evaluate
    from transfuse.recipes.distill import AdversarialSpec, adversarial_metrics

    data = build_data("fashion_mnist", {"labelled": 5000, "unlabelled": False, "seed": 0})
    cnn = builtin_cnn(data)
    return {"accuracy": evaluate(cnn, data.test)["accuracy"],
            **adversarial_metrics(cnn, data, AdversarialSpec(attack="pgd", eps=eps, steps=10, limit=1000))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.1)
    args = ap.parse_args()
    attack = f"eval.adversarial={{attack: pgd, eps: {args.eps}, steps: 10, limit: 1000}}"
    common = DATA + [attack, f"train.epochs={args.epochs}"]
    rows = {k: {"clean": [], "robust": []} for k in ("clean teacher (CNN)", "robust teacher (MLP-256, adv_train)", "kd (clean teacher)", "adv_train alone", "mtard")}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        robust_teacher = root / "robust_teacher"  # trained once (seed 0), shared by every seed's mtard
        teacher_runs = {"clean teacher (CNN)": builtin_cnn_metrics(args.eps), "robust teacher (MLP-256, adv_train)": run_recipe(
            "adv_train", common + ["train.seed=0", "student.params={hidden: [256]}", f"objective.params.eps={args.eps}"], robust_teacher)}
        for seed in args.seeds:
            s = [f"train.seed={seed}"]
            runs = {
                **teacher_runs,
                "kd (clean teacher)": run_recipe("kd", common + s + ["teacher.cache=true", "objective.params={temperature: 4.0, alpha: 0.9}"], root / f"kd{seed}"),
                "adv_train alone": run_recipe("adv_train", common + s + ["student.params={hidden: [64]}", f"objective.params.eps={args.eps}"], root / f"adv{seed}"),
                "mtard": run_recipe("mtard", common + s + [
                    "teacher.ensemble=[{name: cnn, weights: 'builtin:fashion_mnist_cnn', cache: false}, "
                    f"{{name: mlp, params: {{hidden: [256]}}, weights: '{robust_teacher / 'student.safetensors'}', cache: false}}]",
                    f"objective.params.eps={args.eps}"], root / f"mtard{seed}"),
            }
            for name, m in runs.items():
                if name in teacher_runs and seed != args.seeds[0]:
                    continue
                rows[name]["clean"].append(m["accuracy"])
                rows[name]["robust"].append(m["robust_accuracy"])
            print(f"seed {seed} done at {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\n{len(args.seeds)} seeds, {args.epochs} epochs, PGD-10 at eps {args.eps} of the pixel range; {time.perf_counter() - start:.0f} s wall\n")
    print(table(["model", "clean accuracy %", f"PGD-10 robust accuracy % (eps {args.eps})"],
                [[k, cell(v["clean"]), cell(v["robust"])] for k, v in rows.items()]))


if __name__ == "__main__":
    main()
