"""Merge speed and peak memory: transfuse vs mergekit (PyPI) vs plain PyTorch vs the I/O floor, in one run.

Inputs: the checkpoints of ``merge_make_checkpoints.py`` (a base and two fine-tuned models in
Llama-3.2-1B layout, bf16, sharded). For each method the same merge is run by each tool in its
own process; wall time and peak RSS (``wait4`` rusage of that process) are recorded, the outputs
are compared tensor by tensor where the semantics are the same, and deleted. Rows:

- transfuse: the CLI as a user runs it (fused kernels, inputs' sha256 for the model card taken
  from the digest cache, primed once before timing: that one-off hashing is reported apart);
  the median of ``--repeats`` runs, as are the floors (mergekit and the torch path run once);
- transfuse, cold: the same with an empty numba cache (the first merge of a method compiles);
- plain PyTorch: transfuse's own torch path (``TRANSFUSE_MERGE_KERNELS=0``): the same streaming
  engine with the methods as torch ops;
- mergekit 0.1.5 with the same configuration;
- the I/O floor: every input file read once and an output of the merged size written with plain
  file copies (``shutil.copyfile``) and an fsync, as the merge does, right after the method;
- the direct-I/O floor: the same reads, the output written with O_DIRECT (as transfuse writes
  it), the stricter bound since buffered writes were slow and variable on these machines.

Every measured run (and the floor) starts with the inputs read into the page cache: mergekit's
10-15 GB peaks evict them otherwise, and the next run would pay the disk.

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


WARM: list = []  # the input folders, read into the page cache before every measured run


def read_all(folders: list) -> None:
    """Read every safetensors file of the folders once, 16 MiB at a time."""
    for folder in folders:
        for f in sorted(Path(folder).glob("*.safetensors")):
            with open(f, "rb", buffering=0) as fh:
                while fh.read(1 << 24):
                    pass


def warm_page_cache() -> None:
    """Read every input once: a previous run (mergekit peaks at 10-15 GB) may have evicted them,
    and every tool should start from the same warm cache, as the I/O floor does."""
    read_all(WARM)


# Peak RSS must come from a process forked by a small one. Linux keeps, in a process's maxrss, the
# high-water mark of the memory it had when it exec'd: a command spawned straight from this
# script (0.5 GB after comparing outputs) reported this script's size, not its own. The launcher
# (as /usr/bin/time does) forks the command from a ~10 MB interpreter and reports its rusage.
_LAUNCH = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[1], sys.argv[1:])\n"
    "_, status, ru = os.wait4(pid, 0)\n"
    "print(f'\\n@rusage {ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}', flush=True)\n"
    "code = os.waitstatus_to_exitcode(status)\n"
    "if code < 0:\n"
    "    os.kill(os.getpid(), -code)  # killed by a signal (e.g. the OOM killer): so is the launcher\n"
    "sys.exit(code)\n"
)


def run_measured(cmd: list, env: dict | None = None) -> dict:
    warm_page_cache()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, *map(str, cmd)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    out_text = proc.stdout.read().decode(errors="replace")
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    maxrss_kb, cpu = out_text.rsplit("@rusage ", 1)[1].split()
    res = {"seconds": wall, "peak_rss_gb": int(maxrss_kb) * 1024 / 1e9, "cpu_seconds": float(cpu)}
    if code != 0:
        print(out_text[-2000:], file=sys.stderr)
        print(f"command failed ({code}{', killed: out of memory?' if code == -9 else ''}): {' '.join(map(str, cmd))}", file=sys.stderr)
        res["failed"] = f"exit {code}" + (" (SIGKILL, the kernel's OOM killer)" if code == -9 else "")
    return res


def median_run(runs: list) -> dict:
    """The run with the median wall time (its RSS and CPU go with it)."""
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def folder_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.glob("*.safetensors"))


def _copy_file(src: Path, dst: Path) -> None:
    """A plain file copy (``shutil.copyfile``), then fsync."""
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as fh:
        os.fsync(fh.fileno())


def _direct_file(src: Path, dst: Path) -> None:
    """A file of src's size written with O_DIRECT in 8 MiB aligned writes (as transfuse writes), then fsync."""
    import mmap

    size, buf = src.stat().st_size, mmap.mmap(-1, 8 << 20)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    for pos in range(0, size, len(buf)):
        os.pwrite(fd, buf, pos)
    os.ftruncate(fd, size)
    os.fsync(fd)
    os.close(fd)


def io_floor(inputs: list, out_size_like: Path, work: Path, write=_copy_file) -> dict:
    """Read every input once, then write an output the size of ``out_size_like`` with ``write``."""
    warm_page_cache()
    t0 = time.perf_counter()
    read_all(inputs)
    dst = work / "floor"
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(out_size_like.glob("*.safetensors")):
        write(f, dst / f.name)
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
    ap.add_argument("--mergekit", default=".bench/mkvenv/bin/mergekit-yaml", help="mergekit-yaml to compare with; none: skip mergekit")
    ap.add_argument("--work", default=".bench/merge_runs")
    ap.add_argument("--methods", default="linear,ties,dare,ties_global,pcb")
    ap.add_argument("--torch-path", default="linear,ties,dare", help="methods also timed on the plain PyTorch path")
    ap.add_argument("--repeats", type=int, default=3, help="transfuse (warm) runs and floors per method; the median is reported")
    ap.add_argument("--json", default=".bench/merge_speed.json")
    ap.add_argument("--out-dtype", default="bfloat16", help="the merged model's dtype (float16 for checkpoints made with --dtype float16)")
    args = ap.parse_args()
    ck, work = Path(args.ckpt).resolve(), Path(args.work).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    base, ft1, ft2 = ck / "base", ck / "ft1", ck / "ft2"
    in_gb = sum(folder_bytes(p) for p in (base, ft1, ft2)) / 1e9
    model_gb = folder_bytes(base) / 1e9
    experts = {"base_model": str(base), "models": [{"model": str(ft1)}, {"model": str(ft2)}]}
    mk_experts = lambda extra: {"base_model": str(base), "models": [{"model": str(p), "parameters": {"weight": 1.0, **extra}} for p in (ft1, ft2)]}  # noqa: E731
    # The same merges in both tools' vocabularies (transfuse options chosen to match mergekit's semantics).
    setups = {
        "linear": (
            {"method": "linear", "models": [{"model": str(p)} for p in (base, ft1, ft2)]},
            {"merge_method": "linear", "models": [{"model": str(p), "parameters": {"weight": 1.0}} for p in (base, ft1, ft2)]},
        ),
        "ties": (
            {"method": "ties", **experts, "parameters": {"density": 0.5, "topk": "per_tensor", "sign_from": "weighted", "normalize": "weights"}},
            {"merge_method": "ties", "parameters": {"normalize": True}, **mk_experts({"density": 0.5})},
        ),
        "dare": (
            {"method": "dare", **experts, "parameters": {"density": 0.5}},
            {"merge_method": "dare_linear", "parameters": {"normalize": False}, **mk_experts({"density": 0.5})},
        ),
        # the paper's TIES (whole-model top-k) and PCB: mergekit has neither, transfuse only
        "ties_global": ({"method": "ties", **experts, "parameters": {"density": 0.2}}, None),
        "pcb": ({"method": "pcb", **experts, "parameters": {"ratio": 0.1}}, None),
    }
    WARM.extend([base, ft1, ft2])
    results = {"input_gb": in_gb, "model_gb": model_gb, "runs": {}}
    floor = io_floor([base, ft1, ft2], base, work)  # also warms the page cache for everyone
    results["io_floor_first"] = floor
    # the model card's input digests: computed once, remembered by (path, size, mtime, inode)
    hash_cache = work / "sha256.json"
    env = {"TRANSFUSE_HASH_CACHE": str(hash_cache)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from transfuse.merge.io import input_sha256; "
                    "[input_sha256(sorted(Path(p).glob('*.safetensors'))) for p in sys.argv[1:]]", str(base), str(ft1), str(ft2)],
                   check=True, env={**os.environ, **env})
    results["hash_inputs_once_seconds"] = time.perf_counter() - t0
    compare_names = ["model.layers.3.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"]
    for m in args.methods.split(","):
        ours_cfg, mk_cfg = setups[m]
        ours_cfg = {**ours_cfg, "dtype": "float32", "out_dtype": args.out_dtype, "output": str(work / f"ours_{m}"), "shard_size": "2GB"}
        (work / f"ours_{m}.yaml").write_text(yaml.safe_dump(ours_cfg))
        cli = [sys.executable, "-m", "transfuse.cli", "merge", str(work / f"ours_{m}.yaml")]
        r = {}
        if m != "pcb":  # PCB has no fused kernel: nothing to compile
            cold_cache = work / f"numba_cold_{m}"
            r["transfuse_cold"] = run_measured(cli, {**env, "NUMBA_CACHE_DIR": str(cold_cache)})
            shutil.rmtree(work / f"ours_{m}", ignore_errors=True)
            shutil.rmtree(cold_cache, ignore_errors=True)
        tries = []
        for _ in range(args.repeats):  # the machines are shared and their page cache is reclaimed: median of a few
            shutil.rmtree(work / f"ours_{m}", ignore_errors=True)
            tries.append(run_measured(cli, env))
            record = work / f"ours_{m}" / "transfuse_merge.json"
            if record.exists():  # the engine's own time: the run minus interpreter and import start-up
                tries[-1]["merge_seconds"] = json.loads(record.read_text())["merge_seconds"]
        r["transfuse"] = median_run(tries)
        r["transfuse_tries_s"] = [t["seconds"] for t in tries]
        r.setdefault("transfuse_cold", r["transfuse"])
        print(m, "transfuse", r["transfuse"], "cold", r["transfuse_cold"], flush=True)
        if m in args.torch_path.split(","):
            shutil.move(str(work / f"ours_{m}"), str(work / f"keep_{m}"))
            r["torch_path"] = run_measured(cli, {**env, "TRANSFUSE_MERGE_KERNELS": "0"})
            print(m, "torch path", r["torch_path"], flush=True)
            if "failed" not in r["torch_path"]:
                r["max_abs_diff_vs_torch_path"] = compare(work / f"keep_{m}", work / f"ours_{m}", compare_names)
            shutil.rmtree(work / f"ours_{m}", ignore_errors=True)
            shutil.move(str(work / f"keep_{m}"), str(work / f"ours_{m}"))
        if mk_cfg is not None and args.mergekit != "none":
            mk_cfg = {**mk_cfg, "dtype": "float32", "out_dtype": args.out_dtype}
            (work / f"mk_{m}.yaml").write_text(yaml.safe_dump(mk_cfg))
            r["mergekit"] = run_measured([args.mergekit, str(work / f"mk_{m}.yaml"), str(work / f"mk_{m}"), "--no-copy-tokenizer", "--quiet",
                                          "--out-shard-size", "1B"])
            print(m, "mergekit", r["mergekit"], flush=True)
            if m in ("linear", "ties") and "failed" not in r["mergekit"] and "failed" not in r["transfuse"]:
                r["max_abs_diff_vs_mergekit"] = compare(work / f"ours_{m}", work / f"mk_{m}", compare_names)
        floors = [io_floor([base, ft1, ft2], work / f"ours_{m}", work) for _ in range(args.repeats)]
        directs = [io_floor([base, ft1, ft2], work / f"ours_{m}", work, _direct_file) for _ in range(args.repeats)]
        r["floor"], r["floor_direct"] = median_run(floors), median_run(directs)
        r["floor_tries_s"] = [f["seconds"] for f in floors]
        r["floor_direct_tries_s"] = [f["seconds"] for f in directs]
        results["runs"][m] = r
        shutil.rmtree(work / f"ours_{m}", ignore_errors=True)
        shutil.rmtree(work / f"mk_{m}", ignore_errors=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    print()
    print(f"inputs: 3 checkpoints, {in_gb:.2f} GB in all; one model {model_gb:.2f} GB ({args.out_dtype}); "
          f"hashing the inputs once (model card digests, then remembered): {results['hash_inputs_once_seconds']:.1f} s")
    head = (f"{'method':12} {'ours s':>7} {'engine s':>8} {'cold s':>7} {'torch s':>8} {'mk s':>7} {'floor s':>8} {'direct s':>8} {'ours/floor':>10} {'/direct':>8} {'mk/ours':>8} "
            f"{'torch/ours':>10} {'ours RSS GB':>11} {'torch RSS':>9} {'mk RSS GB':>10} {'RSS/model':>9} {'|d| mk':>8} {'|d| torch':>9}")
    print(head)
    nan = float("nan")
    for m, r in results["runs"].items():
        o, f = r["transfuse"], r["floor"]
        k, tp = r.get("mergekit", {}), r.get("torch_path", {})
        if "failed" in k:
            print(f"{m:12} mergekit {k['failed']} after {k['seconds']:.0f}s at peak RSS {k['peak_rss_gb']:.2f} GB")
        print(f"{m:12} {o['seconds']:7.1f} {o.get('merge_seconds', nan):8.1f} {r['transfuse_cold']['seconds']:7.1f} {tp.get('seconds', nan):8.1f} {k.get('seconds', nan):7.1f} "
              f"{f['seconds']:8.1f} {r['floor_direct']['seconds']:8.1f} {o['seconds'] / f['seconds']:10.2f} "
              f"{o['seconds'] / r['floor_direct']['seconds']:8.2f} {k.get('seconds', nan) / o['seconds']:8.2f} "
              f"{tp.get('seconds', nan) / o['seconds']:10.2f} {o['peak_rss_gb']:11.2f} {tp.get('peak_rss_gb', nan):9.2f} "
              f"{k.get('peak_rss_gb', nan):10.2f} {o['peak_rss_gb'] / model_gb:9.2f} "
              f"{r.get('max_abs_diff_vs_mergekit', nan):8.1e} {r.get('max_abs_diff_vs_torch_path', nan):9.1e}")
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
