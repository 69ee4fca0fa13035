"""PEFT 0.21.2 ``merge_utils`` against transfuse's calls: one table row per function, max abs error.

    PYTHONPATH=src .venv/bin/python benchmarks/peer_conventions_peft.py

Reads the references scripts/peft_references.py made in PEFT's venv (tests/merge/peft_refs/); the
DARE rows use PEFT's own Bernoulli masks (transfuse's draws are counter-based, not torch's global RNG).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "merge"))
from test_peft_refs import CASES, TENSORS, transfuse_call  # noqa: E402

CALLS = {
    "task_arithmetic": "task_arithmetic",
    "magnitude_prune": "magnitude_prune(density=d)",
    "ties": "ties(density=d, topk=exact, sign_method=total/frequency)",
    "dare_linear": "dare(density=d) [PEFT's masks]",
    "dare_ties": "dare(density=d, sign=ties, sign_method=total/frequency) [PEFT's masks]",
}


def main() -> None:
    err, n, detail = defaultdict(float), defaultdict(int), defaultdict(set)
    for case in CASES:
        fn, name, *rest = case.split("/")
        out = transfuse_call(case, TENSORS.get(f"mask/{case}"))
        err[fn] = max(err[fn], (out - TENSORS[case]).abs().max().item())
        n[fn] += 1
        detail[fn].add("/".join([name, *rest]))
    print("| PEFT 0.21.2 merge_utils function (cases) | transfuse's call | max abs error |")
    print("| --- | --- | --- |")
    for fn, call in CALLS.items():
        print(f"| {fn} ({n[fn]} cases: dense / tied inputs, d in {sorted({c.split('/')[1] for c in detail[fn] if '/' in c}) or '-'}) "
              f"| {call} | {err[fn]:.2e} |")
    from transfuse.merge._peft import majority_sign

    for sm in ("total", "frequency"):
        e = max((((TENSORS[f"x/{x}"].sign() == majority_sign(TENSORS[f"x/{x}"], sm)).float()
                  - TENSORS[f"majority_sign_mask/{x}/{sm}"]).abs().max().item()) for x in ("dense", "tied"))
        print(f"| calculate_majority_sign_mask(method={sm}) (dense / tied) | sign(x) == merge._peft.majority_sign(x, {sm!r}) "
              f"(what ties/dare elect with sign_method={sm}) | {e:.2e} |")


if __name__ == "__main__":
    main()
