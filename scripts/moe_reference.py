"""Compare `transfuse moe` with mergekit-moe 0.1.5 on tiny Llamas (run with any python that has torch + safetensors).

    /work/venvs/mergekit/bin/python scripts/moe_reference.py

Makes the tests' tiny Llama base + 3 experts (tests/merge/test_moe.py, in the shared venv), builds
the MoE with both tools for gate_mode cheap_embed, hidden and random, and writes max abs errors of
the router weights and of every other tensor to tests/merge/peft_refs/moe.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TRANSFUSE = os.environ.get("TRANSFUSE_PYTHON", "/work/main/.venv/bin/python")
MERGEKIT = os.environ.get("MERGEKIT_MOE", "/work/venvs/mergekit/bin/mergekit-moe")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def load_dir(d: Path) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def main() -> None:
    res = {}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        code = (f"import sys, json, pathlib; sys.path.insert(0, {str(ROOT / 'tests' / 'merge')!r}); "
                f"from test_moe import tiny_llamas, moe_config; b, p = tiny_llamas(pathlib.Path({d!r})); "
                f"[open(pathlib.Path({d!r}) / (m + '.yml'), 'w').write(json.dumps(moe_config(b, p, m))) for m in ('cheap_embed', 'hidden', 'random')]")
        subprocess.run([TRANSFUSE, "-c", code], check=True, env=ENV)
        for mode in ("cheap_embed", "hidden", "random"):
            cfg = root / f"{mode}.yml"
            subprocess.run([TRANSFUSE, "-m", "transfuse.cli", "moe", str(cfg), str(root / f"tf_{mode}")], check=True, env=ENV)
            subprocess.run([MERGEKIT, str(cfg), str(root / f"mk_{mode}"), "--device", "cpu"], check=True)
            a, b = load_dir(root / f"tf_{mode}"), load_dir(root / f"mk_{mode}")
            gates = [k for k in a if k.endswith("mlp.gate.weight")]
            r = {"same_tensor_names": sorted(a) == sorted(b),
                 "router_max_abs_err": max((a[k].float() - b[k].float()).abs().max().item() for k in gates),
                 "other_tensors_max_abs_err": max((a[k].float() - b[k].float()).abs().max().item() for k in a if k in b and k not in gates)}
            if mode == "random":
                r["router_std_transfuse"] = torch.stack([a[k] for k in gates]).std().item()
                r["router_std_mergekit"] = torch.stack([b[k] for k in gates]).std().item()
            ca = json.loads((root / f"tf_{mode}" / "config.json").read_text())
            cb = json.loads((root / f"mk_{mode}" / "config.json").read_text())
            r["config_diff"] = {k: [ca.get(k), cb.get(k)] for k in set(ca) | set(cb) if ca.get(k) != cb.get(k) and k != "transformers_version"}
            res[mode] = r
    out = ROOT / "tests" / "merge" / "peft_refs" / "moe.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
