"""`lm_demo`: distil SmolLM2-135M-Instruct into a 4-layer student built from its own layers, on
Python's built-in documentation, with no teacher / forward_kl / reverse_kl / taid, over seeds.

Reports held-out perplexity and teacher NLL (the teacher's mean NLL per token of the student's
sampled continuations of held-out prompts) per method as mean and spread over seeds. The teacher
runs once: its top-k log-probabilities are cached and every distilled student reads the cache.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from pydantic import Field

from ..config import Strict, load_config
from .distill_lm import LMConfig, Prepared, perplexity, teacher_nll

CONFIG = Path(__file__).parent / "configs" / "lm_demo.yaml"


class Method(Strict):
    label: str
    objective: str
    params: Dict[str, Any] = Field(default_factory=dict)


class LMDemoConfig(LMConfig):
    methods: List[Method] = Field(default_factory=lambda: [
        Method(label="no teacher", objective="ce"),
        Method(label="forward_kl", objective="forward_kl"),
        Method(label="reverse_kl", objective="reverse_kl"),
        Method(label="taid", objective="taid"),
    ])
    seeds: List[int] = Field(default_factory=lambda: [0, 1])
    report_dir: Optional[str] = None


def _fmt(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(cfg: LMDemoConfig, *, log=print) -> Dict[str, Any]:
    start = time.perf_counter()
    prepared = Prepared(cfg, log=log)
    student0, _ = prepared.student()
    student0.eval()
    ref = {
        "teacher_ppl": perplexity(prepared.teacher, prepared.eval_data),
        "teacher_self_nll": teacher_nll(prepared.teacher, prepared.teacher, prepared.eval_data,
                                        prompt_tokens=cfg.eval.prompt_tokens, new_tokens=cfg.eval.new_tokens,
                                        samples=cfg.eval.samples, seed=1000, eos_token_id=prepared.eos,
                                        pad_token_id=prepared.pad),
        "initial_student_ppl": perplexity(student0, prepared.eval_data),
        "initial_student_teacher_nll": teacher_nll(student0, prepared.teacher, prepared.eval_data,
                                                   prompt_tokens=cfg.eval.prompt_tokens, new_tokens=cfg.eval.new_tokens,
                                                   samples=cfg.eval.samples, seed=1000, eos_token_id=prepared.eos,
                                                   pad_token_id=prepared.pad),
    }
    del student0
    log(json.dumps(ref))
    runs = []
    for seed in cfg.seeds:
        for m in cfg.methods:
            r = prepared.run(m.objective, m.params, seed=seed, log=log)
            r["label"] = m.label
            runs.append(r)
    lines = [
        "| method | held-out perplexity | teacher NLL of samples | train s/run |",
        "|---|---|---|---|",
        f"| teacher (reference) | {ref['teacher_ppl']:.3f} | {ref['teacher_self_nll']:.3f} | |",
        f"| student before training | {ref['initial_student_ppl']:.3f} | {ref['initial_student_teacher_nll']:.3f} | |",
    ]
    for m in cfg.methods:
        rs = [r for r in runs if r["label"] == m.label]
        lines.append(f"| {m.label} | {_fmt([r['held_out_ppl'] for r in rs])} | {_fmt([r['teacher_nll'] for r in rs])} | "
                     f"{statistics.mean(r['train_seconds'] for r in rs):.0f} |")
    table = "\n".join(lines)
    total = time.perf_counter() - start
    log(table)
    log(f"total {total:.0f} s; seeds {cfg.seeds}; mean ± sample std over seeds")
    out = {"reference": ref, "runs": runs, "table": table, "seconds": total,
           "cache_seconds": getattr(prepared, "cache_seconds", None)}
    if cfg.report_dir:
        folder = Path(cfg.report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "lm_demo.json").write_text(json.dumps(out, indent=1))
        (folder / "lm_demo.md").write_text(table + "\n")
    return out


def load(path: Optional[str] = None, overrides=()) -> LMDemoConfig:
    small = os.environ.get("TRANSFUSE_CI_SMALL") == "1"
    cfg = load_config(LMDemoConfig, path or CONFIG, overrides)
    return cfg if not small else cfg.model_copy(update={"seeds": cfg.seeds[:1]})


if __name__ == "__main__":
    import sys

    main(load(None, sys.argv[1:]))
