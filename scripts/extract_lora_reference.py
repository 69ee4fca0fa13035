"""Check `transfuse extract-lora` against mergekit-extract-lora 0.1.5 and PEFT 0.21.2 (run in PEFT's venv).

    /work/venvs/peft/bin/python scripts/extract_lora_reference.py

Makes a tiny random Llama and a fine-tune of it (rank-3 deltas + noise) with transformers, extracts
a rank-4 adapter with transfuse (shared venv) and with mergekit-extract-lora (its venv), loads both
with ``PeftModel.from_pretrained`` and writes the max abs errors to
tests/merge/peft_refs/extract_lora.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TRANSFUSE = os.environ.get("TRANSFUSE_PYTHON", "/work/main/.venv/bin/python")
MERGEKIT = os.environ.get("MERGEKIT_EXTRACT", "/work/venvs/mergekit/bin/mergekit-extract-lora")
RANK = 4


def pair(root: Path) -> None:
    """The tests' own checkpoints (tests/merge/test_extract_lora.py), made in the shared venv."""
    code = (f"import sys, pathlib; sys.path.insert(0, {str(ROOT / 'tests' / 'merge')!r}); "
            f"from test_extract_lora import tiny_llama_pair; tiny_llama_pair(pathlib.Path({str(root)!r}))")
    subprocess.run([TRANSFUSE, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def main() -> None:
    res = {"peft": __import__("peft").__version__, "transformers": transformers.__version__, "rank": RANK}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        pair(root)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        subprocess.run([TRANSFUSE, "-m", "transfuse.cli", "extract-lora", str(root / "ft"), str(root / "base"),
                        str(root / "tf"), "--rank", str(RANK)], check=True, env=env)
        subprocess.run([MERGEKIT, "--model", str(root / "ft"), "--base-model", str(root / "base"),
                        "--out-path", str(root / "mk"), "--max-rank", str(RANK)], check=True)
        a, b = load_file(str(root / "tf" / "adapter_model.safetensors")), load_file(str(root / "mk" / "adapter_model.safetensors"))
        res["same_keys_as_mergekit"] = sorted(a) == sorted(b)
        res["keys_only_transfuse"], res["keys_only_mergekit"] = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        err = 0.0
        for k in a:
            if k.endswith("lora_A.weight"):
                kb = k.replace("lora_A", "lora_B")
                err = max(err, (a[kb] @ a[k] - b[kb] @ b[k]).abs().max().item())  # B @ A: free of SVD's signs
            elif "lora_" not in k and k in b:
                err = max(err, (a[k] - b[k]).abs().max().item())
        res["max_abs_err_BA_vs_mergekit"] = err
        ca, cb = (json.loads((root / n / "adapter_config.json").read_text()) for n in ("tf", "mk"))
        res["config_diff_vs_mergekit"] = {k: [ca.get(k), cb.get(k)] for k in set(ca) | set(cb)
                                          if k != "base_model_name_or_path" and
                                          (sorted(ca.get(k)) if isinstance(ca.get(k), list) else ca.get(k)) !=
                                          (sorted(cb.get(k)) if isinstance(cb.get(k), list) else cb.get(k))}
        ids = torch.arange(24).view(2, 12) % 64
        ft = transformers.AutoModelForCausalLM.from_pretrained(root / "ft").eval()
        logits = {}
        for n in ("tf", "mk"):
            model = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(root / "base"), root / n).eval()
            with torch.no_grad():
                logits[n] = model(ids).logits
            merged = model.merge_and_unload().state_dict()
            res[f"{n}_merged_vs_finetuned_weights_max_abs"] = max((merged[k] - v).abs().max().item() for k, v in ft.state_dict().items())
        with torch.no_grad():
            ref = ft(ids).logits
        res["peft_loads_transfuse_adapter"] = True
        res["logits_tf_vs_mk_max_abs"] = (logits["tf"] - logits["mk"]).abs().max().item()
        res["logits_tf_vs_finetuned_max_abs"] = (logits["tf"] - ref).abs().max().item()
    out = ROOT / "tests" / "merge" / "peft_refs" / "extract_lora.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
