"""Federated Fashion-MNIST over Dirichlet(alpha) label skew: fedavg, ties / task_arithmetic as
aggregators, feddf, knfu; then the wall time of one round under the Flower simulation vs the
in-process loop (same clients, same server step).

    nice -n 5 python benchmarks/federate_dirichlet.py [--rounds 20] [--train-size 3000] [--seeds 0 1 2] [--alphas 100 1 0.1]
    nice -n 5 python benchmarks/federate_dirichlet.py --fedka --rounds 10     # FedAvg vs FedKA, rotated target
    nice -n 5 python benchmarks/federate_dirichlet.py --architectures          # feddf / knfu over two client architectures

Prints measured numbers only (final / best global accuracy, final mean local accuracy per method).
"""
from __future__ import annotations

import argparse
import time

import torch

import transfuse
from transfuse.eval.report import markdown_table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--train-size", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--alphas", type=float, nargs="+", default=[100.0, 1.0, 0.1])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--no-flower", action="store_true")
    ap.add_argument("--only-flower", action="store_true")
    ap.add_argument("--fedka", action="store_true", help="only the FedKA comparison on a rotated target domain")
    ap.add_argument("--architectures", action="store_true", help="only feddf / knfu with two client architectures vs one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = {
        "data": {"name": "fashion_mnist", "params": {"train_size": args.train_size, "test_size": 1000}},
        "clients": args.clients, "rounds": args.rounds, "server_data": 500, "seeds": args.seeds,
        "local": {"epochs": 1, "batch_size": 32, "lr": 0.05}, "model": {"name": "mlp", "params": {"hidden": [64]}},
        "engine": "inprocess",
        "methods": ["fedavg",
                    {"name": "fedavg", "aggregate": {"name": "ties", "params": {"density": 0.5}}, "label": "ties"},
                    {"name": "fedavg", "aggregate": {"name": "task_arithmetic", "params": {"normalize": True}}, "label": "task_arithmetic"},
                    {"name": "feddf", "params": {"steps": 50}},
                    {"name": "knfu", "params": {"steps": 10}}],
    }
    if args.fedka:
        return fedka(base, args)
    if args.architectures:
        return architectures(base, args)
    rows = []
    for alpha in [] if args.only_flower else args.alphas:
        t0 = time.perf_counter()
        s = transfuse.federate({**base, "split": {"kind": "dirichlet", "alpha": alpha}}, write=False)
        for label, m in s["methods"].items():
            g = m["curves"]["global_acc"]["mean"]
            pm = lambda k: f"{m['final'][k]:.3f} ± {m['final_std'][k]:.3f}"
            rows.append({"alpha": alpha, "method": label, "final global acc": pm("global_acc"), "best global acc (mean curve)": f"{max(g):.3f}",
                         "final mean local acc": pm("mean_local_acc"), "MB": f"{m['bytes'] / 1e6:.1f}",
                         "s per run": f"{m['seconds']:.0f}"})
        print(f"alpha={alpha}: {time.perf_counter() - t0:.0f} s", flush=True)
    if rows:
        print(markdown_table(rows), flush=True)
    if args.no_flower:
        return
    one = {**base, "rounds": 1, "methods": ["fedavg"], "split": {"kind": "dirichlet", "alpha": 1.0}, "flower": {"num_cpus": 2}}
    t0 = time.perf_counter()
    a = transfuse.federate({**one, "engine": "inprocess"}, write=False)
    t_in = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = transfuse.federate({**one, "engine": "flower"}, write=False)
    t_fl = time.perf_counter() - t0
    same = a["methods"]["fedavg"]["final"]["global_acc"] == b["methods"]["fedavg"]["final"]["global_acc"]
    print(f"one round, {args.clients} clients: in-process {t_in:.1f} s, Flower simulation (Ray, 2 CPUs, incl. start) {t_fl:.1f} s, "
          f"ratio {t_fl / t_in:.1f}x; same global accuracy: {same}")


def fedka(base, args) -> None:
    """Clients on rotations 0/15/30 degrees, target domain rotated 45: FedAvg vs FedKA on the target."""
    cfg = {**base, "split": {"kind": "domain", "domains": [0.0, 15.0, 30.0]}, "target_rotate": 45.0,
           "methods": ["fedavg", {"name": "fedka", "params": {"steps": 20}}]}
    s = transfuse.federate(cfg, write=False)
    rows = []
    for label, m in s["methods"].items():
        pm = lambda k: f"{m['final'][k]:.3f} ± {m['final_std'][k]:.3f}"
        rows.append({"method": label, "target acc (rotated 45)": pm("target_acc"), "global acc (unrotated test)": pm("global_acc"),
                     "s per run": f"{m['seconds']:.0f}"})
    print(markdown_table(rows))


def architectures(base, args) -> None:
    """Clients alternate between MLP 784-64-10 and MLP 784-32-32-10 (one global model per architecture,
    weights averaged within an architecture, knowledge across them through logits) vs all clients on
    the first one; fedavg over two architectures is refused, so it runs on one."""
    two = [{"name": "mlp", "params": {"hidden": [64]}}, {"name": "mlp", "params": {"hidden": [32, 32]}}]
    rows = []
    for alpha in args.alphas:
        for models, tag in ((two, "2 architectures"), (base["model"], "1 architecture")):
            methods = ([{"name": "feddf", "params": {"steps": 50}}, {"name": "knfu", "params": {"steps": 10}}]
                       + (["fedavg"] if tag == "1 architecture" else []))
            s = transfuse.federate({**base, "model": models, "methods": methods, "split": {"kind": "dirichlet", "alpha": alpha}}, write=False)
            for label, m in s["methods"].items():
                last = [r["history"][-1] for r in m["runs"]]
                by = [sum(h["global_acc_by_model"][a] for h in last) / len(last) for a in range(2)] if tag != "1 architecture" else None
                rows.append({"alpha": alpha, "clients' models": tag, "method": label,
                             "final global acc (MLP-64)": f"{m['final']['global_acc']:.3f} ± {m['final_std']['global_acc']:.3f}",
                             "final global acc (MLP-32-32)": f"{by[1]:.3f}" if by else "-",
                             "final mean local acc": f"{m['final']['mean_local_acc']:.3f} ± {m['final_std']['mean_local_acc']:.3f}"})
            print(f"alpha={alpha} {tag} done", flush=True)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
