"""Run a classifier over a data split in batches and measure it (accuracy, ECE, NLL, teacher agreement, KL, size, speed)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import IndexedTensors
from ..errors import TransfuseError
from ..signals import as_batch, as_outputs
from .metrics import accuracy, agreement, count_parameters, expected_calibration_error, kl_to_teacher, latency_ms_per_1000


def _batches(data: Union[IndexedTensors, Iterable[Any]], batch_size: int):
    if isinstance(data, IndexedTensors):
        for start in range(0, len(data), batch_size):
            yield data.inputs[start : start + batch_size], data.labels[start : start + batch_size]
    else:
        for raw in data:
            batch = as_batch(raw)
            yield batch.inputs, batch.labels


def logit_scores(logits: Tensor, labels: Tensor, bins: int = 15) -> Dict[str, float]:
    """Accuracy, ECE and NLL of logits (N, C) against labels (N,), unlabelled (-1) rows skipped."""
    known = labels >= 0
    nll = F.cross_entropy(logits[known].float(), labels[known]).item() if bool(known.any()) else float("nan")
    probs = F.softmax(logits.float(), dim=-1)
    return {"accuracy": accuracy(logits, labels), "ece": expected_calibration_error(probs, labels, bins), "nll": nll}


def evaluate(
    model: nn.Module,
    data: Union[IndexedTensors, Iterable[Any]],
    *,
    teacher_logits: Optional[Tensor] = None,
    batch_size: int = 1000,
    bins: int = 15,
    latency: bool = False,
) -> Dict[str, Any]:
    """Logits and metrics of ``model`` over ``data`` (an IndexedTensors, or a loader in a fixed order).

    teacher_logits: (N, C) in the same sample order, for agreement and KL(teacher || student).
    Returns tensors "logits" (N, C), "probs" (N, C), "labels" (N,) and the numbers "accuracy",
    "ece", "nll", "parameters", plus "agreement", "kl_to_teacher" with a teacher and
    "latency_ms_per_1000" when ``latency`` is set. The model's train/eval mode is restored.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    logits_parts, label_parts, example = [], [], None
    try:
        with torch.inference_mode():
            for inputs, labels in _batches(data, batch_size):
                example = inputs if example is None else example
                logits_parts.append(as_outputs(model(inputs.to(device))).logits.float().cpu())  # (B, C)
                label_parts.append(labels.cpu() if labels is not None else torch.full((len(inputs),), -1))
    finally:
        model.train(was_training)
    if not logits_parts:
        raise TransfuseError("the evaluation data is empty; give it at least one sample")
    logits = torch.cat(logits_parts)  # (N, C)
    labels = torch.cat(label_parts).long()  # (N,)
    probs = F.softmax(logits, dim=-1)  # float32
    known = labels >= 0
    if bool(known.any()) and int(labels.max()) >= logits.shape[-1]:
        raise TransfuseError(
            f"the data has class id {int(labels.max())} but the model gives {logits.shape[-1]} classes; "
            "build the model with the data's num_classes"
        )
    result: Dict[str, Any] = {"logits": logits, "probs": probs, "labels": labels, **logit_scores(logits, labels, bins),
                              "parameters": count_parameters(model)}
    if teacher_logits is not None:
        teacher_logits = teacher_logits.float().cpu()
        if teacher_logits.shape[-1] != logits.shape[-1]:
            raise TransfuseError(
                f"the teacher gives {teacher_logits.shape[-1]} classes but the student {logits.shape[-1]}; "
                "give both models the same classes"
            )
        if len(teacher_logits) != len(logits):
            raise TransfuseError(
                f"teacher_logits has {len(teacher_logits)} rows but the data has {len(logits)} samples; "
                "compute them over the same split in the same order"
            )
        result["agreement"] = agreement(logits, teacher_logits)
        result["kl_to_teacher"] = kl_to_teacher(logits, teacher_logits)
    if latency:
        # Timed on the split's first 1,000 inputs, or a loader's first batch.
        timing = data.inputs[:1000] if isinstance(data, IndexedTensors) else example
        result["latency_ms_per_1000"] = latency_ms_per_1000(model, timing)
    return result


evaluate_model = evaluate
