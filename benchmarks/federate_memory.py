"""Peak memory and wall time of federated rounds with 10 and 50 clients on each engine: the in-process
loop, the Flower simulation (run_simulation, Ray) and real processes (engine=deployment: a SuperLink
and one SuperNode per client on localhost).

Each configuration runs in a fresh child process; a sampler sums the proportional set size (PSS:
shared pages split between the processes that map them, so the sum is not inflated by torch's
libraries) over that child and all its descendants (Ray's raylet and workers, the SuperLink, the
SuperNodes and their ClientApp processes) every 0.25 s, and keeps the peak.

    nice -n 5 python benchmarks/federate_memory.py [--clients 10 50] [--engines inprocess flower deployment] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import psutil

from transfuse.eval.report import markdown_table

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from transfuse.federate.api import run_method
from transfuse.federate.config import FederateConfig, MethodSpec
cfg = FederateConfig(**json.loads(sys.argv[1]))
t0 = time.perf_counter()
h = run_method(cfg, MethodSpec(name="fedavg"), 0)["history"]
print(json.dumps({"seconds": time.perf_counter() - t0, "global_acc": h[-1]["global_acc"], "clients": len(h[-1]["clients"])}))
"""


def tree_pss(root: psutil.Process) -> int:
    total = 0
    for p in [root] + root.children(recursive=True):
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def measure(cfg: dict) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = {"pss": 0, "procs": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak["pss"] = max(peak["pss"], tree_pss(root))
                peak["procs"] = max(peak["procs"], 1 + len(root.children(recursive=True)))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.25)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}) for {cfg['engine']} {cfg['clients']} clients")
    return {**json.loads(out.strip().splitlines()[-1]), **peak}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--engines", nargs="+", default=["inprocess", "flower", "deployment"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--hidden", type=int, default=256)
    args = ap.parse_args()
    rows = []
    for engine in args.engines:
        for n in args.clients:
            cfg = {"data": {"name": "fashion_mnist", "params": {"train_size": args.train_size, "test_size": 1000}},
                   "split": {"kind": "dirichlet", "alpha": 1.0}, "clients": n, "rounds": args.rounds,
                   "local": {"epochs": 1, "batch_size": 32, "lr": 0.05}, "model": {"name": "mlp", "params": {"hidden": [args.hidden]}},
                   "engine": engine, "flower": {"num_cpus": 2}, "federation": {"startup_timeout": 600}}
            r = measure(cfg)
            rows.append({"engine": engine, "clients": n, "peak PSS (MB), all processes": f"{r['pss'] / 2**20:.0f}",
                         "processes (peak)": r["procs"], f"wall s ({args.rounds} rounds, incl. start)": f"{r['seconds']:.1f}",
                         "final global acc": f"{r['global_acc']:.3f}"})
            print(rows[-1], flush=True)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
