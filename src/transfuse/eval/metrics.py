"""Metrics over tensors: accuracy, calibration (ECE, reliability bins), agreement and KL with a teacher, size, speed.

Logits and probabilities have the class axis last, (N, C); labels are (N,) with -1 (or any
negative id) for samples that have none, which every labelled metric skips.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from ..models import count_parameters
from ..objectives._functional import kl

__all__ = [
    "accuracy",
    "expected_calibration_error",
    "reliability_bins",
    "agreement",
    "kl_to_teacher",
    "count_parameters",
    "latency_ms_per_1000",
]


def _labelled(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    keep = labels >= 0
    return scores.reshape(-1, scores.shape[-1])[keep.reshape(-1)], labels.reshape(-1)[keep.reshape(-1)]


def accuracy(logits_or_probs: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy over labelled samples; nan when none is labelled."""
    scores, y = _labelled(logits_or_probs, labels)
    if len(y) == 0:
        return float("nan")
    return float((scores.argmax(-1) == y).float().mean())


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> Dict[str, List[float]]:
    """Equal-width confidence bins (Guo et al. 2017, "On Calibration of Modern Neural Networks", section 2).

    A sample with confidence c = max_k p_k falls in bin m when (m-1)/M < c <= m/M. Returns the
    M+1 edges and, per bin, the sample count, accuracy and mean confidence (0 for empty bins).
    """
    p, y = _labelled(probs.float(), labels)
    conf, pred = p.max(-1)  # (N,), (N,)
    edges = torch.linspace(0.0, 1.0, n_bins + 1)  # float32, compared with float32 confidences
    which = torch.bucketize(conf, edges[1:-1], right=False)  # (N,) in 0..M-1: (lower, upper]
    count = torch.bincount(which, minlength=n_bins).double()  # (M,)
    correct = torch.bincount(which, weights=(pred == y).double(), minlength=n_bins)
    conf_sum = torch.bincount(which, weights=conf.double(), minlength=n_bins)
    safe = count.clamp_min(1)
    return {
        "edges": edges.double().tolist(),
        "count": count.long().tolist(),
        "accuracy": (correct / safe).tolist(),
        "confidence": (conf_sum / safe).tolist(),
    }


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE = sum_m |B_m|/n * |acc(B_m) - conf(B_m)| over equal-width confidence bins (Guo et al. 2017, eq. 3)."""
    bins = reliability_bins(probs, labels, n_bins)
    n = sum(bins["count"])
    if n == 0:
        return float("nan")
    return float(sum(c / n * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"])))


def agreement(student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None) -> float:
    """Share of positions where student and teacher pick the same top-1 class; ``mask`` (..., ) keeps some."""
    same = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float()  # (...)
    if mask is not None:
        return float(same[mask.bool()].mean())
    return float(same.mean())


def kl_to_teacher(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Mean KL(p_teacher || p_student) at temperature 1, softmax in float32."""
    return float(kl(teacher_logits, student_logits).mean())


def latency_ms_per_1000(
    model: nn.Module, example_inputs: Tensor, *, repeats: int = 5, warmup: int = 1, max_batch: int = 1000
) -> float:
    """Milliseconds to run ``model`` on 1,000 inputs: the fastest of ``repeats`` timed forwards of one batch.

    The minimum, not the median: on a shared machine other load only ever adds time, so the
    fastest run is the closest to the model's own cost.

    The batch is the first ``max_batch`` rows of ``example_inputs`` (1,000 or what is given), run
    under inference_mode in eval mode on the model's device; the time is scaled to 1,000 inputs.
    """
    batch = example_inputs[:max_batch]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    batch = batch.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                sync()
                t0 = time.perf_counter()
                model(batch)
                sync()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return min(times) * 1000.0 * 1000.0 / len(batch)
