"""Merge quality: a CNN family fine-tuned from one shared start on three tasks, merged by every method.

Shared start: a small CNN trunk pretrained by rotation prediction (4 classes: 0/90/180/270
degrees) on unlabelled images of all three data sets. Each task then fine-tunes the trunk with
its own 10-class head: Fashion-MNIST (5k train), MNIST-5k, scikit-learn digits upsampled to
28x28. The trunks are merged with ``transfuse.merge`` (heads stay per task, as in the task
arithmetic / TIES vision experiments); each task is evaluated with the merged trunk and its own
head, and accuracy is normalised by that task's fine-tuned model. The one scale knob (lambda) of
the scaled methods is picked on a held-out validation split, as the papers do; densities are
the papers' defaults. Fisher and RegMean statistics come from 256 validation samples per task;
Twin's router is trained on the same validation samples (task id labels).

    python benchmarks/merge_quality.py --seeds 0 1 2   # about 3-5 CPU minutes per seed
    python benchmarks/merge_quality.py --family overlap --methods linear,task_arithmetic,ties,pcb --seeds 0 1 2
      # three Fashion-MNIST label sets (0-5, 2-7, 4-9) instead of three data sets; only the listed merges
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import transfuse
from transfuse.data import datasets
from transfuse.merge.stats import fisher_diagonal, regmean_grams, save_statistics
from transfuse.merge.twin_model import TwinModel, make_router, train_router


def trunk() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(),
    )


def batches(x, y, bs, gen):
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), bs):
        j = perm[i : i + bs]
        yield x[j], y[j]


def train(body, head, x, y, *, epochs, lr, gen):
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        for xb, yb in batches(x, y, 64, gen):
            loss = F.cross_entropy(head(body(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def accuracy(body, head, x, y) -> float:
    body.eval()
    correct = 0
    for i in range(0, len(x), 512):
        correct += int((head(body(x[i : i + 512])).argmax(-1) == y[i : i + 512]).sum())
    body.train()
    return correct / len(x)


def save_folder(sd: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    return folder


def load_trunk(folder: Path) -> nn.Module:
    from safetensors.torch import load_file

    m = trunk()
    m.load_state_dict(load_file(str(folder / "model.safetensors")))
    return m


# merges that read no base model; every other method needs base_model
METHODS_NEED_BASE = {"linear": False, "fisher": False, "regmean": False}
# the validation grid of each merge (label -> parameter options); dare_ties is dare with TIES signs
GRID = {
    "linear": [{}],
    "task_arithmetic": [{"scale": s} for s in (0.3, 0.5, 0.7, 1.0)],
    # TIES and PCB get their second knob too (top-k share), as their papers tune it
    "ties": [{"density": d, "scale": s} for d in (0.2, 0.5) for s in (0.7, 1.0, 1.3, 1.6, 2.0)],
    "dare": [{"density": 0.5, "scale": s} for s in (0.3, 0.5, 0.7, 1.0)],
    "dare_ties": [{"density": 0.5, "sign": "ties", "scale": s} for s in (0.7, 1.0, 1.3)],
    "breadcrumbs": [{"density": 0.9, "gamma": 0.01, "scale": s} for s in (0.3, 0.5, 0.7, 1.0)],
    "della": [{"density": 0.5, "epsilon": 0.1, "scale": s} for s in (0.7, 1.0, 1.3)],
    "model_stock": [{}],
    "pcb": [{"ratio": r, "scale": s} for r in (0.1, 0.2) for s in (0.8, 1.0, 1.2, 1.5, 2.0)],
    "fisher": [{}],
    "regmean": [{"alpha": 0.9}],
}


def grid_for(methods: str) -> dict:
    """GRID restricted to a comma-separated list of labels (all of it when empty)."""
    return {k: v for k, v in GRID.items() if k in methods.split(",")} if methods else dict(GRID)


def merge_folders(work: Path, method: str, params: dict, paths: dict, names: list, stats: str | None = None) -> Path:
    """transfuse.merge of the task folders ``paths[n]`` (n in names) onto ``paths["base"]`` into work/out_*."""
    out = work / f"out_{method}_{len(list(work.glob('out_*')))}"
    models = []
    for n in names:
        p = {"statistics": str(work / f"{stats}_{n}.safetensors")} if stats else {}
        models.append({"model": str(paths[n]), "parameters": p})
    cfg = {"method": method, "models": models, "parameters": params, "output": str(out), "hash_inputs": "none"}
    if METHODS_NEED_BASE.get(method, True):
        cfg["base_model"] = str(paths["base"])
    return transfuse.merge(cfg)


def choose_on_validation(grid: dict, merge_for, load, score, test_rows) -> tuple[dict, dict]:
    """Each grid label's options merged (``merge_for(label, params)`` -> folder, ``load`` -> model), the
    best validation ``score`` kept, its ``test_rows`` reported: (label -> rows, label -> chosen params)."""
    rows, chosen = {}, {}
    for label, options in grid.items():
        best = None
        for params in options:
            out = merge_for(label, params)
            model = load(out)
            s = score(model)
            if best is None or s > best[0]:
                best = (s, params, model)
            shutil.rmtree(out)
        chosen[label] = best[1]
        rows[label] = test_rows(best[2])
        print(f"{label:16} {best[1]} -> " + " ".join(f"{n} {v:.3f}" for n, v in rows[label].items()), flush=True)
    return rows, chosen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=".bench/merge_quality")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--small", action="store_true", help="tiny sizes (tests)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="one whole run (pretraining, fine-tunes, merges) per seed")
    ap.add_argument("--json", default=None)
    ap.add_argument("--family", choices=("datasets", "overlap"), default="datasets",
                    help="datasets: Fashion/MNIST/digits; overlap: Fashion-MNIST label sets 0-5, 2-7, 4-9")
    ap.add_argument("--methods", default="", help="comma-separated subset of the merge grid (default: all, and twin)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    runs = [run_seed(args, seed) for seed in args.seeds]
    if len(runs) > 1:
        summarize(runs)
    print(f"total {time.time() - t0:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(runs if len(runs) > 1 else runs[0], indent=2))


def summarize(runs: list) -> None:
    """Mean and spread (min-max over seeds) of each method's mean normalised accuracy."""
    import statistics

    print(f"\nover seeds {[r['seed'] for r in runs]}:")
    tasks = list(next(iter(runs[0]["rows"].values())))
    print("| method | " + " | ".join(tasks) + " | mean |  min-max of mean over seeds |")
    print("| --- | " + " | ".join("---" for _ in tasks) + " | --- | --- |")
    order = sorted(runs[0]["rows"], key=lambda m: -statistics.mean(sum(r["rows"][m].values()) / 3 for r in runs))
    for m in order:
        per = {n: statistics.mean(r["rows"][m][n] for r in runs) for n in runs[0]["rows"][m]}
        means = [sum(r["rows"][m].values()) / len(r["rows"][m]) for r in runs]
        print(f"| {m} | " + " | ".join(f"{v:.3f}" for v in per.values()) + f" | {statistics.mean(means):.3f} | {min(means):.3f}-{max(means):.3f} |")
    for m in runs[0]["chosen"]:
        print(f"chosen for {m}: " + "; ".join(json.dumps(r["chosen"][m]) for r in runs))


def three_datasets(args, n_train: int) -> dict:
    """The default family: three data sets (Fashion-MNIST, MNIST-5k, digits), nearly orthogonal task vectors."""
    tasks = {
        "fashion": datasets.get("fashion_mnist")(train_size=n_train + 500, test_size=400 if args.small else 2000),
        "mnist": datasets.get("mnist5k")(),
        "digits": datasets.get("digits")(size=28),
    }
    data = {}
    for name, d in tasks.items():
        x, y = d.train.inputs.float(), d.train.labels
        nval = 100 if args.small else (300 if name == "digits" else 500)
        ntr = min(len(x) - nval, n_train)
        data[name] = {"train": (x[:ntr], y[:ntr]), "val": (x[ntr : ntr + nval], y[ntr : ntr + nval]),
                      "test": (d.test.inputs.float(), d.test.labels)}
    return data


# --family overlap: three tasks on Fashion-MNIST with overlapping label sets (each class in 1-3 tasks),
# so the task vectors share directions (the setting where TIES / PCB's conflict handling should matter)
OVERLAP = {"fash_0-5": range(0, 6), "fash_2-7": range(2, 8), "fash_4-9": range(4, 10)}


def overlap_tasks(args, n_train: int) -> dict:
    """Each task: its own third of a Fashion-MNIST pool, restricted to its label set (10-way head)."""
    per = n_train + 500
    d = datasets.get("fashion_mnist")(train_size=3 * per, test_size=400 if args.small else 3000)
    x, y = d.train.inputs.float(), d.train.labels
    nval = 100 if args.small else 500
    data = {}
    for i, (name, classes) in enumerate(OVERLAP.items()):
        keep = torch.isin(y[i * per : (i + 1) * per], torch.tensor(list(classes)))
        xs, ys = x[i * per : (i + 1) * per][keep], y[i * per : (i + 1) * per][keep]
        tkeep = torch.isin(d.test.labels, torch.tensor(list(classes)))
        data[name] = {"train": (xs[nval:], ys[nval:]), "val": (xs[:nval], ys[:nval]),
                      "test": (d.test.inputs.float()[tkeep], d.test.labels[tkeep])}
    return data


def run_seed(args, seed: int) -> dict:
    print(f"== seed {seed}", flush=True)
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_train = 600 if args.small else 5000
    data = overlap_tasks(args, n_train) if args.family == "overlap" else three_datasets(args, n_train)
    # 1. shared start: rotation prediction on unlabelled images of all tasks
    pre_x = torch.cat([data[n]["train"][0][: (500 if args.small else 2000)] for n in data])
    rot = torch.randint(0, 4, (len(pre_x),), generator=gen)
    rx = torch.stack([torch.rot90(img, int(k), dims=(1, 2)) for img, k in zip(pre_x, rot)])
    base = trunk()
    rot_head = nn.Linear(64, 4)
    train(base, rot_head, rx, rot, epochs=1 if args.small else 2, lr=1e-3, gen=gen)
    base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
    paths = {"base": save_folder(base_sd, work / "base")}
    # 2. fine-tune per task
    heads, ft_acc = {}, {}
    for name in data:
        body = trunk()
        body.load_state_dict(base_sd)
        head = nn.Linear(64, 10)
        train(body, head, *data[name]["train"], epochs=1 if args.small else 3, lr=1e-3, gen=gen)
        heads[name] = head
        paths[name] = save_folder(body.state_dict(), work / name)
        ft_acc[name] = accuracy(body, head, *data[name]["test"])
        print(f"fine-tuned {name}: test accuracy {ft_acc[name]:.4f}", flush=True)
    names = list(data)

    # data-driven statistics: 256 validation samples per task
    for name in names:
        body = load_trunk(paths[name])
        xv = data[name]["val"][0][:256]
        head = heads[name]
        F_ = fisher_diagonal(body, [xv[:128], xv[128:]], generator=torch.Generator().manual_seed(1),
                             logits_fn=lambda m, x, head=head: head(m(x)))
        save_statistics(F_, work / f"fisher_{name}.safetensors")
        save_statistics(regmean_grams(body, [xv[:128], xv[128:]]), work / f"gram_{name}.safetensors")

    def evaluate(body_or_fn, split: str) -> dict:
        out = {}
        for n in names:
            x, y = data[n][split]
            out[n] = accuracy(body_or_fn, heads[n], x, y) if isinstance(body_or_fn, nn.Module) else body_or_fn(n, x, y)
        return out

    val_ft = {n: accuracy(load_trunk(paths[n]), heads[n], *data[n]["val"]) for n in names}

    def run(method: str, params: dict, stats: str | None = None) -> Path:
        return merge_folders(work, method, params, paths, names, stats)

    rows = {"fine-tuned (each task its own model)": {n: 1.0 for n in names}}
    base_acc = evaluate(base, "test")

    def merge_for(label: str, params: dict) -> Path:
        method = "dare" if label == "dare_ties" else label
        return run(method, params, {"fisher": "fisher", "regmean": "gram"}.get(method))

    def score(body) -> float:
        v = evaluate(body, "val")
        return sum(v[n] / val_ft[n] for n in names) / len(names)

    def test_rows(body) -> dict:
        test = evaluate(body, "test")
        return {n: test[n] / ft_acc[n] for n in names}

    merged, chosen = choose_on_validation(grid_for(args.methods), merge_for, load_trunk, score, test_rows)
    rows.update(merged)

    rows["shared start (base trunk + task heads)"] = {n: base_acc[n] / ft_acc[n] for n in names}
    if args.methods and "twin" not in args.methods.split(","):
        return finish(seed, rows, names, ft_acc, chosen, {})
    # Twin: shared (task arithmetic 0.3) + rank-10% exclusive experts + router on validation samples
    out = run("twin", {"shared_scale": 0.3, "rank_ratio": 0.1})
    from safetensors.torch import load_file

    shared = load_trunk(out)
    feats = lambda m, x: m(x)  # noqa: E731 - the shared trunk's 64-d features
    twin = TwinModel(shared, load_file(str(out / "twin_experts.safetensors")), len(names), make_router(64, len(names)), feats)
    rx_ = torch.cat([data[n]["val"][0][:256] for n in names])
    rt_ = torch.cat([torch.full((min(256, len(data[n]["val"][0])),), i) for i, n in enumerate(names)])
    train_router(twin, list(batches(rx_, rt_, 64, gen)), epochs=15, lr=3e-3)

    def twin_acc(n, x, y):
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x), 512):
                correct += int((heads[n](twin(x[i : i + 512])).argmax(-1) == y[i : i + 512]).sum())
        return correct / len(x)

    with torch.no_grad():
        route_acc = {n: float((twin.route(data[n]["test"][0][:1000]).argmax(-1) == i).float().mean()) for i, n in enumerate(names)}
    test = evaluate(twin_acc, "test")
    rows["twin"] = {n: test[n] / ft_acc[n] for n in names}
    print(f"twin             router accuracy {route_acc} -> " + " ".join(f"{n} {rows['twin'][n]:.3f}" for n in names), flush=True)
    return finish(seed, rows, names, ft_acc, chosen, route_acc)


def finish(seed, rows, names, ft_acc, chosen, route_acc) -> dict:
    print()
    print("| method | " + " | ".join(names) + " | mean |")
    print("| --- | " + " | ".join("---" for _ in names) + " | --- |")
    for label, r in rows.items():
        mean = sum(r.values()) / len(r)
        print(f"| {label} | " + " | ".join(f"{r[n]:.3f}" for n in names) + f" | {mean:.3f} |")
    print("\nfine-tuned test accuracy: " + ", ".join(f"{n} {ft_acc[n]:.4f}" for n in names))
    print(f"chosen on validation: {json.dumps(chosen)}")
    print(f"twin router accuracy on test inputs: {json.dumps(route_acc)}")
    return {"seed": seed, "rows": rows, "ft_acc": ft_acc, "chosen": chosen, "route_acc": route_acc}


if __name__ == "__main__":
    main()
