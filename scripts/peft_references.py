"""Regenerate the PEFT 0.21.2 references the merge tests compare with (run in PEFT's own venv).

    /work/venvs/peft/bin/python scripts/peft_references.py

Calls ``peft.utils.merge_utils`` on seeded task vectors and writes inputs, outputs and, for the
DARE functions, PEFT's own Bernoulli masks (drawn again from the same torch seed) to
tests/merge/peft_refs/merge_utils.safetensors (small).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from peft.utils import merge_utils as mu
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "tests" / "merge" / "peft_refs" / "merge_utils.safetensors"
SHAPE = (32, 24)  # one tensor, 768 entries
K = 3


def inputs() -> dict:
    g = torch.Generator().manual_seed(1234)
    dense = torch.randn(K, *SHAPE, generator=g)  # (K, 32, 24): all magnitudes distinct
    tied = torch.randint(-4, 5, (K, *SHAPE), generator=g).float() / 4  # many ties at every threshold
    return {"dense": dense, "tied": tied}


def main() -> None:
    warnings.simplefilter("ignore")  # prune warns at density >= 1
    xs = inputs()
    w = torch.tensor([0.7, 1.3, -0.4])
    out = {"w": w, **{f"x/{k}": v for k, v in xs.items()}}
    cases = []
    for name, x in xs.items():
        tasks = list(x)
        out[f"task_arithmetic/{name}"] = mu.task_arithmetic(tasks, w)
        cases.append(f"task_arithmetic/{name}")
        for d in (0.0, 0.2, 0.5, 1.0):
            key = f"magnitude_prune/{name}/{d}"
            out[key] = mu.magnitude_prune(tasks, w, d)
            cases.append(key)
            for sm in (("total", "frequency") if d > 0 else ()):  # transfuse's ties needs density > 0
                key = f"ties/{name}/{d}/{sm}"
                out[key] = mu.ties(tasks, w, d, majority_sign_method=sm)
                cases.append(key)
        out[f"majority_sign_mask/{name}/frequency"] = mu.calculate_majority_sign_mask(x, "frequency").float()
        out[f"majority_sign_mask/{name}/total"] = mu.calculate_majority_sign_mask(x, "total").float()
        for d in (0.3, 0.7):
            for fn in ("dare_linear", "dare_ties"):
                for sm in (("total", "frequency") if fn == "dare_ties" else ("total",)):
                    key = f"{fn}/{name}/{d}/{sm}"
                    seed = len(cases)
                    torch.manual_seed(seed)
                    masks = torch.stack([torch.bernoulli(torch.full_like(t, d)) for t in tasks])  # PEFT's draws
                    torch.manual_seed(seed)
                    extra = {} if fn == "dare_linear" else {"majority_sign_method": sm}
                    out[key] = getattr(mu, fn)(tasks, w, d, **extra)
                    out[f"mask/{key}"] = masks
                    cases.append(key)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT),
              metadata={"peft": __import__("peft").__version__, "torch": torch.__version__, "cases": json.dumps(cases)})
    print(f"{len(cases)} cases -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
