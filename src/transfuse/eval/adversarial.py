"""Robust accuracy under L-infinity attacks: FGSM (Goodfellow et al. 2015) and PGD-k (Madry et al. 2018).

The attacks work on the model's input space as given (for the shipped image data sets: pixels in
[0, 1] before the data set's normalisation, when ``bounds`` says so); the step is the sign of the
input gradient of the cross-entropy, projected back into the eps-ball and the bounds after each step.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import IndexedTensors
from ..errors import TransfuseError
from ..signals import as_outputs
from .evaluate import _batches


def pgd_attack(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_size: Optional[float] = None,
    random_start: bool = True,
    bounds: Optional[Tuple[float, float]] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Adversarial inputs within ||x' - x||_inf <= eps; ``steps=1, step_size=eps, random_start=False`` is FGSM.

    inputs (B, ...) and labels (B,) -> (B, ...). step_size defaults to 2.5 eps / steps (Madry et al.).
    The model's parameters get no gradient; its train/eval mode is the caller's.
    """
    if eps < 0 or steps < 1:
        raise TransfuseError("an attack needs eps >= 0 and steps >= 1")
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    x0 = inputs.detach().float()
    x = x0.clone()
    if random_start and eps > 0:
        noise = torch.rand(x0.shape, generator=generator, device="cpu").to(x0.device) * 2 - 1  # (B, ...)
        x = x0 + eps * noise
    for _ in range(steps):
        x = _clip(x, bounds).requires_grad_(True)
        loss = F.cross_entropy(as_outputs(model(x)).logits.float(), labels)
        (grad,) = torch.autograd.grad(loss, x)
        x = x.detach() + alpha * grad.sign()
        x = x0 + (x - x0).clamp(-eps, eps)
    return _clip(x, bounds).detach()


def _clip(x: Tensor, bounds: Optional[Tuple[float, float]]) -> Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def robust_accuracy(
    model: nn.Module,
    data: Union[IndexedTensors, Iterable[Any]],
    *,
    attack: str = "pgd",
    eps: float = 0.1,
    steps: int = 10,
    step_size: Optional[float] = None,
    bounds: Optional[Tuple[float, float]] = None,
    batch_size: int = 500,
    seed: int = 0,
    limit: Optional[int] = None,
) -> Dict[str, Any]:
    """Accuracy on adversarial versions of ``data``'s labelled samples: {"robust_accuracy", "attack", ...}.

    attack: "pgd" (PGD-``steps`` with a random start) or "fgsm" (one step of size eps, no start).
    limit: attack only the first ``limit`` samples (attacks cost ``steps`` forward+backward passes).
    """
    if attack not in ("pgd", "fgsm"):
        raise TransfuseError(f"unknown attack {attack!r}; use attack=pgd or attack=fgsm")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    correct = total = 0
    try:
        for inputs, labels in _batches(data, batch_size):
            if labels is None:
                continue
            keep = labels >= 0
            x, y = inputs[keep].to(device), labels[keep].to(device).long()
            if limit is not None:
                x, y = x[: max(limit - total, 0)], y[: max(limit - total, 0)]
            if len(y) == 0:
                continue
            if attack == "fgsm":
                adv = pgd_attack(model, x, y, eps=eps, steps=1, step_size=eps, random_start=False, bounds=bounds)
            else:
                adv = pgd_attack(model, x, y, eps=eps, steps=steps, step_size=step_size, bounds=bounds, generator=g)
            with torch.no_grad():
                correct += int((as_outputs(model(adv)).logits.argmax(-1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        raise TransfuseError("robust accuracy needs labelled samples; the data has none")
    name = "fgsm" if attack == "fgsm" else f"pgd{steps}"
    return {"robust_accuracy": correct / total, "attack": name, "eps": eps, "samples": total}


def input_range(inputs: Tensor) -> Tuple[float, float]:
    """(min, max) of a split's inputs: the bounds attacks clip to, whose width is the unit of a relative eps.

    For the shipped image sets (pixels 0..255 normalised by mean and std) this is exactly the
    normalised [0, 1] pixel range, so a relative eps of 0.1 is 25.5 / 255 in pixel terms.
    """
    if not inputs.is_floating_point():
        raise TransfuseError(
            f"adversarial attacks perturb continuous inputs (images); these inputs are {inputs.dtype} (token ids?), "
            "so remove eval.adversarial or use an image data set"
        )
    lo, hi = float(inputs.min()), float(inputs.max())
    if not hi > lo:
        raise TransfuseError("the inputs are constant, so an attack budget relative to their range is 0; give eps in input units")
    return lo, hi


def attack_budget(eps: float, bounds: Tuple[float, float]) -> float:
    """An eps given as a fraction of the input range -> eps in input units."""
    if eps < 0:
        raise TransfuseError(f"an attack's eps must be >= 0; got {eps}")
    return eps * (bounds[1] - bounds[0])
