"""How much the task vectors of a merge_quality family overlap (issue 14): cosine and sign conflicts.

    .venv/bin/python benchmarks/merge_task_vector_overlap.py .bench/merge_quality   # a --work folder of merge_quality.py
    .venv/bin/python benchmarks/merge_task_vector_overlap.py .bench/merge_text/seed0 encoder.  # only tensors named encoder.*

Reads base/ and the task folders left by ``benchmarks/merge_quality.py`` (its last seed), prints the
pairwise cosine of the flattened task vectors and, over the entries that TIES keeps at density 0.5
(whole-model top-k per task) in at least two tasks, the share where the kept signs disagree (the
conflicts TIES's sign election resolves).
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def flat(folder: Path, prefix: str = "") -> torch.Tensor:
    sd = load_file(str(folder / "model.safetensors"))
    return torch.cat([sd[k].float().reshape(-1) for k in sorted(sd) if k.startswith(prefix)])


def overlap(work: Path, prefix: str = "") -> dict:
    """Pairwise cosines of the task vectors in ``work`` and the sign-conflict share among TIES-kept entries
    (over the tensors whose name starts with ``prefix``: all of them by default)."""
    base = flat(work / "base", prefix)
    names = sorted(p.name for p in work.iterdir() if p.is_dir() and p.name != "base" and not p.name.startswith("out_"))
    tau = torch.stack([flat(work / n, prefix) - base for n in names])  # (K, D)
    cos = {f"{a}, {b}": float(torch.nn.functional.cosine_similarity(tau[i], tau[j], dim=0))
           for (i, a), (j, b) in itertools.combinations(enumerate(names), 2)}
    k = tau.shape[1] // 2
    thr = tau.abs().kthvalue(tau.shape[1] - k, dim=1, keepdim=True).values  # (K, 1)
    kept = tau.abs() >= thr  # (K, D)
    pos, neg = ((tau > 0) & kept).sum(0), ((tau < 0) & kept).sum(0)
    shared = kept.sum(0) >= 2
    conflict = shared & (pos > 0) & (neg > 0)
    return {"tasks": names, "cosine": cos, "kept_in_2_or_more": float(shared.float().mean()),
            "sign_conflict_share": float(conflict.sum() / shared.sum())}


def main() -> None:
    o = overlap(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")
    for pair, c in o["cosine"].items():
        print(f"cos({pair}) = {c:.3f}")
    print(f"tasks {o['tasks']}; entries kept in >= 2 tasks: {o['kept_in_2_or_more']:.3f}; "
          f"of those with conflicting signs: {o['sign_conflict_share']:.3f}")

if __name__ == "__main__":
    main()
