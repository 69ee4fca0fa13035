"""Learning-rate schedules as pure step -> factor functions (wrapped in LambdaLR)."""
from __future__ import annotations

import math
from functools import partial

import torch

SCHEDULES = ("constant", "cosine", "linear", "onecycle")


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) out of ``total_steps``."""
    if kind == "onecycle":
        # One-cycle (Smith 2018) in its cosine form: 30% warm-up from lr/25, then anneal to ~0.
        warmup_steps = warmup_steps or max(1, int(0.3 * total_steps))
        if step < warmup_steps:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * step / warmup_steps)) / 2
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * min(1.0, progress))) / 2
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")


def make_scheduler(optimizer: torch.optim.Optimizer, *, kind: str, total_steps: int, warmup_steps: int = 0):
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    fn = partial(lr_factor, total_steps=total_steps, warmup_steps=warmup_steps, kind=kind)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
