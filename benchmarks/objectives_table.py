"""Distillation objectives side by side on Fashion-MNIST: one fixed teacher -> student pair, one budget.

    .venv/bin/python benchmarks/objectives_table.py                 # full table, 3 seeds (minutes on 2 cores)
    .venv/bin/python benchmarks/objectives_table.py --quick         # smoke run: 1 seed, 2 epochs, 1k samples
    .venv/bin/python benchmarks/objectives_table.py --only kd,dkd   # some rows (updates those rows of --out)

Teacher: a small CNN (channels 16, 32; hidden 64) trained 2 epochs on all 60k labelled images,
cached under .bench/objectives/. Student: MLP 784-32-10 trained on 5,000 labelled images (the
regime where RESOURCES.md measured KD helping), AdamW lr 3e-3 one-cycle, batch 128, the same
epochs and seeds for every row, through transfuse's own loop (``transfuse.distill.loop.train``).
Columns: test accuracy, ECE (15 bins), agreement with the teacher's test predictions, accuracy
on shifted test images (fixed random affine: +-3 px, +-10 degrees), mean +- std over seeds.
Then each method's own experiment where it fits here (gtsd toy, swing canary exposure, kldp with
a weaker teacher) and torchdistill's KDLoss on the same pair and data (its own venv).
Writes a JSON of every number next to the printed tables (--out).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from transfuse.data import IndexedTensors, build_data  # noqa: E402
from transfuse.distill.loop import make_loader, train  # noqa: E402
from transfuse.models import build_model  # noqa: E402
from transfuse.objectives import build_objective  # noqa: E402
from transfuse.objectives._features import forward_with_features  # noqa: E402
from transfuse.recipes.distill import hold_out  # noqa: E402
from transfuse.signals import Batch, Outputs  # noqa: E402
from transfuse.teachers import SelfTeacher  # noqa: E402

BENCH = ROOT / ".bench" / "objectives"

# The rows: name -> (objective, params). Same budget for all; params are the recipes' values.
ROWS: Dict[str, tuple] = {
    "no-teacher": ("ce", {}),
    "kd": ("kd", {"temperature": 4.0, "alpha": 0.9}),
    "dkd": ("dkd", {"warmup_epochs": 1}),
    "tgeo": ("tgeo", {"meta_every": 4}),
    "trg": ("trg", {}),
    "crkd": ("crkd", {"logit_temperature": 1.0}),
    "swing": ("swing", {}),
    "mixkd": ("mixkd", {}),
    "hard": ("hard", {}),
    "kldp": ("kldp", {}),
    "talking": ("talking", {}),
    "mapk": ("mapk", {}),
    "kd3": ("kd3", {}),
    "datafree": ("datafree", {}),
    "pskd": ("pskd", {}),
    "sla": ("sla", {}),
    "gtsd": ("gtsd", {}),
}
# Rows whose teacher is the student's own past (transfuse.teachers.SelfTeacher, refreshed after every
# epoch) instead of the CNN, and rows that keep labelled training images out for the objective
# (transfuse.recipes.distill.hold_out: tgeo's bilevel outer loss), as in the shipped recipes.
SELF_TEACHER_ROWS = {"mapk": {"every_epochs": 1}, "gtsd": {"every_epochs": 1}}
HELD_OUT_ROWS = {"tgeo": 500}


# ------------------------------------------------------------------------------------------ metrics
def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    conf, pred = probs.max(-1)
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += float(inside.float().mean()) * abs(float((pred[inside] == labels[inside]).float().mean()) - float(conf[inside].mean()))
    return total


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def shifted(x: torch.Tensor, seed: int = 123) -> torch.Tensor:
    """The test images under a fixed random affine: translation up to 3 px, rotation up to 10 degrees."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(10)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (3 * 2 / h)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    theta[:, :, 2] = shift
    # the data is normalised: shift the zero of the padding to the background value
    bg = float(x.min())
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - bg, grid, align_corners=False) + bg


def measure(student: nn.Module, test: IndexedTensors, teacher_test: torch.Tensor, test_shifted: torch.Tensor) -> Dict[str, float]:
    logits = logits_of(student, test.inputs)
    probs = logits.float().softmax(-1)
    return {
        "accuracy": float((logits.argmax(-1) == test.labels).float().mean()),
        "ece": ece(probs, test.labels),
        # MIX-KD's official validation divides the logits by their std; its ECE is only meaningful that way
        "ece_std_logits": ece((logits.float() / logits.float().std(-1, keepdim=True)).softmax(-1), test.labels),
        "agreement": float((logits.argmax(-1) == teacher_test.argmax(-1)).float().mean()),
        "shifted_accuracy": float((logits_of(student, test_shifted).argmax(-1) == test.labels).float().mean()),
    }


# ------------------------------------------------------------------------------------------ teacher
def plain_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float, seed: int, batch: int = 128) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def teacher_model(full: Any, *, name: str, extra: Optional[tuple] = None, quick: bool = False) -> nn.Module:
    """The fixed CNN teacher, trained once and cached (extra = (inputs, labels) appended, e.g. canaries)."""
    BENCH.mkdir(parents=True, exist_ok=True)
    model = build_model("cnn", {"channels": [16, 32], "hidden": 64}, in_shape=(1, 28, 28), num_classes=10)
    path = BENCH / f"{name}{'_quick' if quick else ''}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    x, y = full.train.inputs, full.train.labels
    if quick:
        x, y = x[:5000], y[:5000]
    if extra is not None:
        x, y = torch.cat([x, extra[0]]), torch.cat([y, extra[1]])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    plain_train(model, x, y, epochs=2, lr=2e-3, seed=0)
    print(f"  trained teacher {name} in {time.perf_counter() - t0:.0f}s", flush=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


class LiveTeacher:
    """Runs the teacher on the (possibly prepared) batch, with the objective's hooked features."""

    def __init__(self, model: nn.Module, paths) -> None:
        self.model, self.paths = model.eval(), tuple(paths)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def __call__(self, batch: Batch, features=()) -> Outputs:
        # the loop passes the objective's teacher feature paths (the same as self.paths)
        with torch.no_grad():
            out = forward_with_features(self.model, batch.inputs, tuple(features) or self.paths)
        return Outputs(logits=out.logits, hidden=dict(out.hidden))


class LookupTeacher:
    """Teacher logits computed once for the training set, looked up by sample id."""

    def __init__(self, model: nn.Module, data: IndexedTensors) -> None:
        logits = logits_of(model, data.inputs)
        self.table = torch.zeros(int(data.index.max()) + 1, logits.shape[-1])
        self.table[data.index] = logits

    def __call__(self, batch: Batch) -> Outputs:
        return Outputs(logits=self.table[batch.index])


# ------------------------------------------------------------------------------------------ one run
def run_one(objective_name: str, params: dict, *, train_set: IndexedTensors, teacher: Optional[nn.Module], lookup: Optional[LookupTeacher],
            epochs: int, seed: int, student_init: Optional[dict] = None, hidden: int = 32,
            self_teacher: Optional[dict] = None, held_out: int = 0, student_spec: Optional[tuple] = None) -> tuple[nn.Module, float, Any]:
    """self_teacher: SelfTeacher params (the CNN is not used); held_out: labelled images given to the
    objective through ``hold_out`` and removed from its training split (same seed as the run);
    student_spec: (registry name, params) of another student than the MLP 784-hidden-10."""
    torch.manual_seed(seed)
    name, spec = student_spec or ("mlp", {"hidden": [hidden]})
    student = build_model(name, spec, in_shape=(1, 28, 28), num_classes=10)
    if student_init is not None:
        student.load_state_dict(student_init)
    objective = build_objective(objective_name, params)
    objective.bind(student, teacher=None if self_teacher is not None else teacher)
    live = getattr(objective, "changes_inputs", False) or bool(objective.teacher_features)
    source = None
    if objective.needs_teacher and self_teacher is not None:
        source = SelfTeacher(**self_teacher)  # the loop attaches it to the student and refreshes it
    elif objective.needs_teacher:
        source = LiveTeacher(teacher, objective.teacher_features) if (live or lookup is None) else lookup
    if held_out:
        train_set = hold_out(train_set, held_out, objective, seed=seed)
    paths = tuple(objective.student_features)

    def forward(model: nn.Module, batch: Batch) -> Outputs:
        return forward_with_features(model, batch.inputs, paths)

    loader = make_loader(train_set, batch_size=128, seed=seed)
    t0 = time.perf_counter()
    result = train(student=student, teacher=source, objective=objective, train_loader=loader, epochs=epochs, optimizer="adamw",
                   lr=3e-3, schedule="onecycle", seed=seed, forward=forward, progress=False, cpu=True, log_every=10**9)
    return result.student, time.perf_counter() - t0, objective


def summarise(runs: List[Dict[str, float]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key in runs[0]:
        vals = [r[key] for r in runs]
        out[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "runs": vals}
    return out


def fmt(cell: Dict[str, float], pct: bool = True) -> str:
    k = 100 if pct else 1
    return f"{cell['mean'] * k:.2f} ± {cell['std'] * k:.2f}"


# ------------------------------------------------------------------------------------------ experiments
def main_table(args, data, full, test_shifted) -> Dict[str, Any]:
    teacher = teacher_model(full, name="teacher_cnn", quick=args.quick)
    teacher_test = logits_of(teacher, data.test.inputs)
    t_acc = float((teacher_test.argmax(-1) == data.test.labels).float().mean())
    lookup = LookupTeacher(teacher, data.train)
    rows = [r for r in ROWS if not args.only or r in args.only.split(",")]
    table: Dict[str, Any] = {"teacher_accuracy": t_acc, "teacher_ece": ece(teacher_test.softmax(-1), data.test.labels), "rows": {}}
    print(f"\n== main table: teacher CNN {t_acc * 100:.2f}% -> MLP 784-32-10, {len(data.train)} labelled images, "
          f"{args.epochs} epochs, seeds {list(range(args.seeds))}", flush=True)
    print("| method | accuracy % | ECE % | agreement % | shifted acc % | s/run |\n|---|---|---|---|---|---|", flush=True)
    for row in rows:
        name, params = ROWS[row]
        runs, times = [], []
        for seed in range(args.seeds):
            student, secs, _ = run_one(name, params, train_set=data.train, teacher=teacher, lookup=lookup, epochs=args.epochs, seed=seed,
                                       self_teacher=SELF_TEACHER_ROWS.get(row), held_out=HELD_OUT_ROWS.get(row, 0))
            runs.append(measure(student, data.test, teacher_test, test_shifted))
            times.append(secs)
        s = summarise(runs)
        s["seconds"] = statistics.fmean(times)
        s["teacher"] = f"self (SelfTeacher {SELF_TEACHER_ROWS[row]})" if row in SELF_TEACHER_ROWS else "cnn"
        s["held_out"] = HELD_OUT_ROWS.get(row, 0)
        table["rows"][row] = s
        print(f"| {row} | {fmt(s['accuracy'])} | {fmt(s['ece'])} | {fmt(s['agreement'])} | {fmt(s['shifted_accuracy'])} | {s['seconds']:.1f} |", flush=True)
    return table


def gtsd_toy() -> Dict[str, Any]:
    from transfuse.objectives._gtsd_toy import kernel_ridge_self_distillation

    print("\n== gtsd: kernel-ridge toy (Kennethborup/self_distillation README), loss to the true sinusoid")
    out = {}
    for a in (0.0, 0.35):
        losses, limit = kernel_ridge_self_distillation(a, 6)
        out[str(a)] = {"steps": losses, "limit": limit}
        print(f"alpha={a}: steps 1-6 " + " ".join(f"{v:.5f}" for v in losses) + f" | limit {limit:.5f}")
    return out


def canary_exposure(args, data, full) -> Dict[str, Any]:
    """Teacher memorises random-label noise canaries; students see the canary inputs without labels."""
    n_can, classes = (20 if args.quick else 50), 10
    g = torch.Generator().manual_seed(7)
    canaries = torch.randn(n_can, 1, 28, 28, generator=g)
    secrets = torch.randint(0, classes, (n_can,), generator=g)
    teacher = teacher_model(full, name="teacher_cnn_canaries", extra=(canaries.repeat(20, 1, 1, 1), secrets.repeat(20)), quick=args.quick)
    t_rank = _ranks(logits_of(teacher, canaries), secrets)
    n = len(data.train)
    base = int(data.train.index.max()) + 1
    transfer = IndexedTensors(
        torch.cat([data.train.inputs, canaries]),
        torch.cat([data.train.labels, torch.full((n_can,), -1)]),
        torch.cat([data.train.index, base + torch.arange(n_can)]),
    )
    lookup = LookupTeacher(teacher, transfer)
    teacher_test = logits_of(teacher, data.test.inputs)
    print(f"\n== swing: canary exposure ({n_can} noise canaries with secret labels memorised by the teacher; the students see "
          f"the canary inputs unlabelled). Exposure = log2(10) - log2(rank of the secret); random guessing ~ {math.log2(10) - _mean_log_rank_uniform(classes):.2f}")
    print(f"teacher exposure {_exposure(t_rank):.2f}")
    out = {"teacher_exposure": _exposure(t_rank)}
    print("| student | exposure (bits) | test accuracy % |\n|---|---|---|")
    for row, (name, params) in {"no-teacher": ("ce", {}), "kd": ROWS["kd"], "swing": ROWS["swing"]}.items():
        exps, accs = [], []
        for seed in range(args.seeds):
            student, _, _ = run_one(name, params, train_set=transfer, teacher=teacher, lookup=lookup, epochs=args.epochs, seed=seed)
            exps.append(_exposure(_ranks(logits_of(student, canaries), secrets)))
            accs.append(float((logits_of(student, data.test.inputs).argmax(-1) == data.test.labels).float().mean()))
        out[row] = {"exposure": summarise([{"e": e} for e in exps])["e"], "accuracy": summarise([{"a": a} for a in accs])["a"]}
        print(f"| {row} | {fmt(out[row]['exposure'], pct=False)} | {fmt(out[row]['accuracy'])} |", flush=True)
    return out


def _ranks(logits: torch.Tensor, secrets: torch.Tensor) -> torch.Tensor:
    secret_logit = logits.gather(1, secrets.unsqueeze(1))
    return (logits > secret_logit).sum(1) + 1  # (n,) rank 1 = top


def _exposure(ranks: torch.Tensor) -> float:
    return float((math.log2(10) - ranks.float().log2()).mean())


def _mean_log_rank_uniform(c: int) -> float:
    return sum(math.log2(r) for r in range(1, c + 1)) / c


def weak_teacher(args, data) -> Dict[str, Any]:
    """Fantastic Gains' setting: transfer from a teacher weaker than the (pretrained) student."""
    x, y = data.train.inputs, data.train.labels
    torch.manual_seed(0)
    weak = build_model("mlp", {"hidden": [8]}, in_shape=(1, 28, 28), num_classes=10)
    plain_train(weak, x[:1000], y[:1000], epochs=20, lr=3e-3, seed=0)
    weak_test = logits_of(weak, data.test.inputs)
    weak_acc = float((weak_test.argmax(-1) == data.test.labels).float().mean())
    lookup = LookupTeacher(weak, data.train)
    out: Dict[str, Any] = {"teacher_accuracy": weak_acc}
    print(f"\n== kldp: transfer from a weaker teacher (MLP 784-8-10 on 1,000 labels, {weak_acc * 100:.2f}%) into a pretrained student "
          f"(MLP 784-32-10, CE on 5k); transfer runs {max(1, args.epochs // 2)} epochs; delta = accuracy after - before")
    print("| transfer | delta accuracy (points) | accuracy after % |\n|---|---|---|")
    for row, (name, params) in {"kd (KL only, T=1)": ("kd", {"alpha": 1.0, "temperature": 1.0}), "kldp (T=1)": ("kldp", {"temperature": 1.0})}.items():
        deltas, afters = [], []
        for seed in range(args.seeds):
            torch.manual_seed(100 + seed)
            pre = build_model("mlp", {"hidden": [32]}, in_shape=(1, 28, 28), num_classes=10)
            plain_train(pre, x, y, epochs=args.epochs, lr=3e-3, seed=100 + seed)
            before = float((logits_of(pre, data.test.inputs).argmax(-1) == data.test.labels).float().mean())
            student, _, _ = run_one(name, params, train_set=data.train, teacher=weak, lookup=lookup, epochs=max(1, args.epochs // 2),
                                    seed=seed, student_init=pre.state_dict())
            after = float((logits_of(student, data.test.inputs).argmax(-1) == data.test.labels).float().mean())
            deltas.append(after - before)
            afters.append(after)
        out[row] = {"delta": summarise([{"d": d} for d in deltas])["d"], "after": summarise([{"a": a} for a in afters])["a"]}
        print(f"| {row} | {fmt(out[row]['delta'])} | {fmt(out[row]['after'])} |", flush=True)
    return out


def torchdistill_side_by_side(args, data, full) -> Dict[str, Any]:
    """torchdistill's KDLoss in a plain loop (its own venv) vs transfuse's loop with kd, same pair, data, budget."""
    py = ROOT / ".bench" / "tdvenv" / "bin" / "python"
    if not py.exists():
        print("\n== torchdistill: skipped (.bench/tdvenv missing; see docs/benchmarks/objectives.md for the install)")
        return {"skipped": True}
    teacher = teacher_model(full, name="teacher_cnn", quick=args.quick)
    BENCH.mkdir(parents=True, exist_ok=True)
    x, y = data.train.inputs, data.train.labels
    t_logits = logits_of(teacher, x)
    save_file({"x": x.contiguous(), "y": y.contiguous(), "t": t_logits.contiguous(), "tx": data.test.inputs.contiguous(),
               "ty": data.test.labels.contiguous()}, str(BENCH / "td_data.safetensors"))
    out: Dict[str, Any] = {}
    print(f"\n== torchdistill {args.td_version}: KDLoss (T=4, alpha 0.9 on the soft term) in a plain loop vs transfuse's loop with kd; "
          f"same teacher logits, student init, data order seed, epochs {args.epochs}")
    print("| seed | torchdistill acc % | torchdistill s | transfuse acc % | transfuse s |\n|---|---|---|---|---|")
    lookup = LookupTeacher(teacher, data.train)
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        init = build_model("mlp", {"hidden": [32]}, in_shape=(1, 28, 28), num_classes=10).state_dict()
        save_file({k: v.contiguous() for k, v in init.items()}, str(BENCH / "td_init.safetensors"))
        res = subprocess.run([str(py), str(ROOT / "benchmarks" / "_torchdistill_kd.py"), str(BENCH), str(args.epochs), str(seed)],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
        if res.returncode != 0:
            print(res.stderr[-2000:])
            return {"error": res.stderr[-2000:]}
        td = json.loads(res.stdout.strip().splitlines()[-1])
        t0 = time.perf_counter()
        student, secs, _ = run_one("kd", ROWS["kd"][1], train_set=data.train, teacher=teacher, lookup=lookup, epochs=args.epochs, seed=seed,
                                   student_init=init)
        acc = float((logits_of(student, data.test.inputs).argmax(-1) == data.test.labels).float().mean())
        out[str(seed)] = {"torchdistill": td, "transfuse": {"accuracy": acc, "seconds": secs}}
        print(f"| {seed} | {td['accuracy'] * 100:.2f} | {td['seconds']:.1f} | {acc * 100:.2f} | {secs:.1f} |", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated rows of the main table")
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, 1,000 training and 2,000 test images")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: table,toy,canary,weak,torchdistill")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "objectives.json"))
    ap.add_argument("--td-version", default="1.1.5")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 2
    torch.set_num_threads(1)  # the 2 cores are shared; one thread is faster under contention
    params = {"labelled": 5000, "unlabelled": False}
    if args.quick:
        params.update(train_size=8000, test_size=2000, labelled=1000)
    data = build_data("fashion_mnist", params)
    full = build_data("fashion_mnist", {"test_size": 2000} if args.quick else {})
    test_shifted = shifted(data.test.inputs)
    skip = set(args.skip.split(","))
    started = time.perf_counter()
    results: Dict[str, Any] = {"settings": vars(args), "torch": torch.__version__}
    if "toy" not in skip:
        results["gtsd_toy"] = gtsd_toy()
    if "table" not in skip:
        results["table"] = main_table(args, data, full, test_shifted)
    if "canary" not in skip:
        results["canary"] = canary_exposure(args, data, full)
    if "weak" not in skip:
        results["weak_teacher"] = weak_teacher(args, data)
    if "torchdistill" not in skip:
        results["torchdistill"] = torchdistill_side_by_side(args, data, full)
    results["wall_seconds"] = time.perf_counter() - started
    print(f"\ntotal wall time {results['wall_seconds']:.0f}s")
    if not args.quick:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if (args.only or args.skip) and out.exists():
            # a partial run updates the rows / parts it measured and keeps the others, noting what changed
            merged = json.loads(out.read_text())
            for part, value in results.items():
                if part == "table" and "table" in merged:
                    old_rows = merged["table"]["rows"]
                    for row, cell in value["rows"].items():
                        if row in old_rows and old_rows[row].get("teacher", "cnn") != cell["teacher"] or \
                                row in old_rows and old_rows[row].get("held_out", 0) != cell["held_out"]:
                            merged.setdefault("superseded_rows", {})[row] = old_rows[row]
                        old_rows[row] = cell
                elif part not in ("settings", "torch", "wall_seconds"):
                    merged[part] = value
            merged.setdefault("partial_runs", []).append({"settings": vars(args), "wall_seconds": results["wall_seconds"],
                                                         "rows": list(results.get("table", {}).get("rows", {}))})
            results = merged
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
