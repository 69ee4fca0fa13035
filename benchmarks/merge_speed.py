"""Merge speed and peak memory: transfuse vs mergekit (PyPI) vs the I/O floor, in one run.

Inputs: the checkpoints of ``merge_make_checkpoints.py`` (a base and two fine-tuned models in
Llama-3.2-1B layout, bf16, sharded). For each method the same merge is run by both tools, each in
its own process; wall time and peak RSS (``wait4`` rusage of that process) are recorded, the two
outputs are compared tensor by tensor where the semantics are the same (linear, TIES), and the
output is deleted. The I/O floor reads every input file once and writes an output of the merged
size with plain file copies (``shutil.copyfile``) and an fsync, as the merge does.

    python benchmarks/merge_make_checkpoints.py --out .bench/merge_ckpt --models 3
    python benchmarks/merge_speed.py --ckpt .bench/merge_ckpt --mergekit .bench/mkvenv/bin/mergekit-yaml
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml


def run_measured(cmd: list, env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    out_text = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    res = {"seconds": wall, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "cpu_seconds": usage.ru_utime + usage.ru_stime}
    if code != 0:
        print(out_text[-2000:], file=sys.stderr)
        print(f"command failed ({code}{', killed: out of memory?' if code == -9 else ''}): {' '.join(map(str, cmd))}", file=sys.stderr)
        res["failed"] = f"exit {code}" + (" (SIGKILL, the kernel's OOM killer)" if code == -9 else "")
    return res


def folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.glob("*.safetensors"))


def io_floor(inputs: list, out_size_like: Path, work: Path) -> dict:
    t0 = time.perf_counter()
    for folder in inputs:
        for f in sorted(folder.glob("*.safetensors")):
            with open(f, "rb", buffering=0) as fh:
                while fh.read(1 << 24):
                    pass
    dst = work / "floor"
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(out_size_like.glob("*.safetensors")):
        shutil.copyfile(f, dst / f.name)
        with open(dst / f.name, "rb+") as fh:
            os.fsync(fh.fileno())
    wall = time.perf_counter() - t0
    shutil.rmtree(dst)
    return {"seconds": wall}


def compare(a: Path, b: Path, names: list) -> float:
    """Max |a - b| over a few tensors (both read as float32)."""
    from safetensors import safe_open

    def find(folder: Path, name: str):
        idx = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"] if (folder / "model.safetensors.index.json").exists() else None
        f = folder / (idx[name] if idx else "model.safetensors")
        with safe_open(str(f), "pt") as fh:
            return fh.get_tensor(name).float()

    return max(float((find(a, n) - find(b, n)).abs().max()) for n in names)


def _names(folder: Path) -> list:
    idx = folder / "model.safetensors.index.json"
    if idx.exists():
        return list(json.loads(idx.read_text())["weight_map"])
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return list(fh.keys())


def _has(folder: Path, name: str) -> bool:
    return name in _names(folder)


def _some_names(folder: Path) -> list:
    return _names(folder)[:4]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=".bench/merge_ckpt")
    ap.add_argument("--mergekit", default=".bench/mkvenv/bin/mergekit-yaml")
    ap.add_argument("--work", default=".bench/merge_runs")
    ap.add_argument("--methods", default="linear,ties,dare")
    ap.add_argument("--json", default=".bench/merge_speed.json")
    args = ap.parse_args()
    ck, work = Path(args.ckpt).resolve(), Path(args.work).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    base, ft1, ft2 = ck / "base", ck / "ft1", ck / "ft2"
    in_gb = sum(folder_bytes(p) for p in (base, ft1, ft2)) / 1e9
    model_gb = folder_bytes(base) / 1e9
    # The same merges in both tools' vocabularies (transfuse options chosen to match mergekit's semantics).
    setups = {
        "linear": (
            {"method": "linear", "models": [{"model": str(p)} for p in (base, ft1, ft2)]},
            {"merge_method": "linear", "models": [{"model": str(p), "parameters": {"weight": 1.0}} for p in (base, ft1, ft2)]},
        ),
        "ties": (
            {"method": "ties", "base_model": str(base), "models": [{"model": str(ft1)}, {"model": str(ft2)}],
             "parameters": {"density": 0.5, "topk": "per_tensor", "sign_from": "weighted", "normalize": "weights"}},
            {"merge_method": "ties", "base_model": str(base), "parameters": {"normalize": True},
             "models": [{"model": str(p), "parameters": {"weight": 1.0, "density": 0.5}} for p in (ft1, ft2)]},
        ),
        "dare": (
            {"method": "dare", "base_model": str(base), "models": [{"model": str(ft1)}, {"model": str(ft2)}],
             "parameters": {"density": 0.5}},
            {"merge_method": "dare_linear", "base_model": str(base), "parameters": {"normalize": False},
             "models": [{"model": str(p), "parameters": {"weight": 1.0, "density": 0.5}} for p in (ft1, ft2)]},
        ),
    }
    results = {"input_gb": in_gb, "model_gb": model_gb, "runs": {}}
    floor = io_floor([base, ft1, ft2], base, work)  # also warms the page cache for everyone
    results["io_floor_first"] = floor
    compare_names = ["model.layers.3.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"]
    for m in args.methods.split(","):
        ours_cfg, mk_cfg = setups[m]
        ours_cfg = {**ours_cfg, "dtype": "float32", "out_dtype": "bfloat16", "output": str(work / f"ours_{m}"), "shard_size": "2GB"}
        mk_cfg = {**mk_cfg, "dtype": "float32", "out_dtype": "bfloat16"}
        (work / f"ours_{m}.yaml").write_text(yaml.safe_dump(ours_cfg))
        (work / f"mk_{m}.yaml").write_text(yaml.safe_dump(mk_cfg))
        r = {}
        r["transfuse"] = run_measured([sys.executable, "-m", "transfuse.cli", "merge", str(work / f"ours_{m}.yaml")])
        print(m, "transfuse", r["transfuse"], flush=True)
        r["mergekit"] = run_measured([args.mergekit, str(work / f"mk_{m}.yaml"), str(work / f"mk_{m}"), "--no-copy-tokenizer", "--quiet",
                                      "--out-shard-size", "1B"])
        print(m, "mergekit", r["mergekit"], flush=True)
        if m in ("linear", "ties") and "failed" not in r["mergekit"] and "failed" not in r["transfuse"]:
            names = [n for n in compare_names if _has(work / f"ours_{m}", n)] or _some_names(work / f"ours_{m}")
            r["max_abs_diff_vs_mergekit"] = compare(work / f"ours_{m}", work / f"mk_{m}", names)
        r["floor"] = io_floor([base, ft1, ft2] if m != "linear" else [base, ft1, ft2], work / f"ours_{m}", work)
        results["runs"][m] = r
        shutil.rmtree(work / f"ours_{m}", ignore_errors=True)
        shutil.rmtree(work / f"mk_{m}", ignore_errors=True)
    print()
    print(f"inputs: 3 checkpoints, {in_gb:.2f} GB in all; one model {model_gb:.2f} GB (bf16)")
    print(f"{'method':8} {'transfuse s':>12} {'mergekit s':>11} {'floor s':>8} {'mk/ours':>8} {'ours/floor':>10} "
          f"{'ours RSS GB':>11} {'mk RSS GB':>10} {'ours RSS/model':>14} {'max|diff|':>10}")
    for m, r in results["runs"].items():
        o, k, f = r["transfuse"], r["mergekit"], r["floor"]
        if "failed" in k:
            print(f"{m:8} mergekit {k['failed']} after {k['seconds']:.0f}s at peak RSS {k['peak_rss_gb']:.2f} GB")
        print(f"{m:8} {o['seconds']:12.1f} {k['seconds']:11.1f} {f['seconds']:8.1f} {k['seconds'] / o['seconds']:8.2f} "
              f"{o['seconds'] / f['seconds']:10.2f} {o['peak_rss_gb']:11.2f} {k['peak_rss_gb']:10.2f} "
              f"{o['peak_rss_gb'] / model_gb:14.2f} {r.get('max_abs_diff_vs_mergekit', float('nan')):10.2e}")
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
