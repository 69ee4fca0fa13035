"""Ensemble teacher (fusion rules mean and product) vs the best single teacher, same student and budget.

usage: OMP_NUM_THREADS=1 python benchmarks/robust_ensemble_teacher.py [--seeds 0 1 2] [--epochs 2] [--train-size 30000]

Fashion-MNIST, the first ``--train-size`` training images of which 5,000 keep their labels and the
rest are unlabelled (few labels + an unlabelled transfer set: the setting where KD helps this
student, docs/benchmarks/objectives.md), student MLP 784-64-10, kd (T 4, alpha 0.9),
AdamW lr 3e-3 one-cycle, batch 128, ``--epochs`` epochs, through `transfuse distill kd` and
`kd_ensemble` with cached member logits. Teachers: the built-in CNN, and two MLPs
(784-256-10 and 784-128-128-10) trained here with cross-entropy on all 60,000 labels for 3
epochs (seed 0, once). Each single-teacher row distils from one teacher; the ensemble rows from
all three with equal weights, fused by the rule. Test accuracy on the 10,000 test images.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _robust import builtin_cnn, cell, run_recipe, table  # noqa: E402

RULES = ["mean", "product"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=30000)
    args = ap.parse_args()
    data = ["data.name=fashion_mnist", f"data.params={{labelled: 5000, unlabelled: true, train_size: {args.train_size}, seed: 0}}"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teachers = {"cnn (built-in)": ("cnn", "{}", "builtin:fashion_mnist_cnn")}
        teacher_acc = {"cnn (built-in)": None}
        for name, hidden in (("mlp-256", "[256]"), ("mlp-128x128", "[128, 128]")):
            m = run_recipe("ce", ["data.params={seed: 0}", f"student.params={{hidden: {hidden}}}", "train.epochs=3", "train.seed=0"], root / name)
            teachers[name] = ("mlp", f"{{hidden: {hidden}}}", str(root / name / "student.safetensors"))
            teacher_acc[name] = m["accuracy"]
        members = ", ".join(f"{{name: {n}, params: {p}, weights: '{w}', cache: true}}" for n, p, w in teachers.values())
        acc = {f"kd from {t}": [] for t in teachers} | {f"kd from ensemble, rule {r}": [] for r in RULES}
        for seed in args.seeds:
            common = data + [f"train.epochs={args.epochs}", f"train.seed={seed}"]
            for t, (n, p, w) in teachers.items():
                m = run_recipe("kd", common + [f"teacher={{name: {n}, params: {p}, weights: '{w}', cache: true}}"], root / f"kd{seed}")
                acc[f"kd from {t}"].append(m["accuracy"])
                if teacher_acc[t] is None:
                    teacher_acc[t] = _cnn_accuracy()
            for r in RULES:
                m = run_recipe("kd_ensemble", common + [f"teacher={{ensemble: [{members}], rule: {r}, weights: [1.0, 1.0, 1.0]}}"], root / f"ens{seed}")
                acc[f"kd from ensemble, rule {r}"].append(m["accuracy"])
            print(f"seed {seed} done at {time.perf_counter() - start:.0f} s", flush=True)
    singles = [k for k in acc if not k.startswith("kd from ensemble")]
    best = max(singles, key=lambda k: statistics.mean(acc[k]))
    rows = [[k, cell(v), cell([a - b for a, b in zip(v, acc[best])]) if k.startswith("kd from ensemble") else ("best single" if k == best else "")]
            for k, v in acc.items()]
    print(f"\n{len(args.seeds)} seeds, {args.epochs} epochs; teachers' own test accuracy: "
          + ", ".join(f"{t} {100 * a:.2f}%" for t, a in teacher_acc.items()) + f"; {time.perf_counter() - start:.0f} s wall\n")
    print(table(["student (MLP-64) taught by", "test accuracy %", "vs best single teacher's student (points, per seed)"], rows))


def _cnn_accuracy() -> float:
    from transfuse.data import build_data
    from transfuse.eval import evaluate

    data = build_data("fashion_mnist", {"seed": 0})
    return evaluate(builtin_cnn(data), data.test)["accuracy"]


if __name__ == "__main__":
    main()
