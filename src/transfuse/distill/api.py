"""``transfuse.distill``: the loop from a notebook, with plain modules and DataLoaders."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Union

from torch import nn
from torch.utils.data import DataLoader

from ..errors import TransfuseError
from ..objectives import Objective, build_objective
from ..seeding import seed_everything
from ..teachers import as_teacher
from .loop import TrainResult, train


def distill(
    student: nn.Module,
    teacher: Optional[nn.Module | Callable],
    objective: Union[str, Objective] = "kd",
    train_loader: Optional[DataLoader] = None,
    *,
    objective_params: Optional[Dict[str, Any]] = None,
    epochs: int = 1,
    max_steps: Optional[int] = None,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    schedule: str = "onecycle",  # the recipes' default (optim.schedule)
    grad_accum: int = 1,
    seed: int = 0,
    output_dir: Optional[str] = None,
    evaluate: Optional[Callable[[nn.Module], Dict[str, Any]]] = None,
    eval_loader: Optional[Iterable[Any]] = None,
    progress: Optional[bool] = None,
    **loop_options: Any,
) -> TrainResult:
    """Distil ``teacher`` into ``student`` on ``train_loader``; returns the trained student and history.

    ``objective`` is a registered name ("kd", "jsd", ...) with ``objective_params``, or an
    Objective instance. ``teacher`` is an nn.Module (run frozen), a teacher source, or None.
    DataLoader items may be (x, y), (x, y, index), dicts (``inputs`` or Hugging Face ``input_ids`` /
    ``attention_mask`` / ``labels``) or Batch objects. ``eval_loader`` (labelled, fixed order):
    accuracy, ECE and NLL after every epoch, the last of them in ``result.metrics``; or pass your own
    ``evaluate(student) -> dict``. The schedule defaults to the recipes' ``onecycle``. Further loop
    options (mixed_precision, checkpoint_every, resume, grad_clip, ...) pass through to
    :func:`transfuse.distill.loop.train`.
    """
    if train_loader is None:
        raise TypeError("distill needs a train_loader")
    if isinstance(objective, str):
        seed_everything(seed)  # an objective's own modules (HARD's augmentor, CRKD's heads) follow the seed
        obj = build_objective(objective, objective_params)
    else:
        obj = objective
    if teacher is None and obj.needs_teacher:
        name = getattr(obj, "registry_name", type(obj).__name__)
        raise TransfuseError(f"objective {name!r} needs a teacher and teacher=None was given; pass a teacher model or use objective='ce'")
    if evaluate is None and eval_loader is not None:
        from ..eval.evaluate import evaluate as measure

        def evaluate(model: nn.Module) -> Dict[str, Any]:
            report = measure(model, eval_loader)
            return {k: report[k] for k in ("accuracy", "ece", "nll")}

    return train(
        student=student,
        teacher=as_teacher(teacher),
        objective=obj,
        train_loader=train_loader,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        optimizer=optimizer,
        schedule=schedule,
        grad_accum=grad_accum,
        seed=seed,
        output_dir=output_dir,
        evaluate=evaluate,
        progress=progress,
        **loop_options,
    )
