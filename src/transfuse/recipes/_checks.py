"""Checks a distillation recipe runs on its pieces before any training: inputs the models can take,
labels the teacher knows, an output folder that holds no unfinished run.

Each failure is one :class:`TransfuseError` sentence naming what is wrong and how to fix it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import TransfuseError


def takes_token_ids(model: nn.Module) -> bool:
    """True for a Hugging Face text model: its first layer looks token ids up in an embedding table."""
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        return False
    try:
        return isinstance(get(), nn.Embedding)
    except (NotImplementedError, AttributeError):
        return False


def probe(model: nn.Module, data: Any, *, what: str, name: str, inputs: Any = None) -> None:
    """Run ``model`` on two training inputs (``inputs``: the ones it reads, default the split's); a model
    that cannot take the data is refused here."""
    inputs = (data.train.inputs if inputs is None else inputs)[:2]
    if takes_token_ids(model) and inputs.is_floating_point():
        raise TransfuseError(
            f"{what} {name!r} is a text model that reads token ids (integers), but data {data.name!r} gives "
            f"{inputs.dtype} inputs of shape {tuple(inputs.shape[1:])}; give it tokenised text (integer x) or "
            "choose a model for these features (e.g. mlp)"
        )
    was_training = model.training
    try:
        with torch.inference_mode():
            model.eval()(inputs)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TransfuseError(
            f"{what} {name!r} cannot run on data {data.name!r} (inputs {inputs.dtype} of shape "
            f"{tuple(inputs.shape[1:])}): {type(exc).__name__}: {first[:200]}; check the model and its params"
        ) from None
    finally:
        model.train(was_training)


def labels_beyond(data: Any, classes: int) -> str:
    """' (label 7: 1 sample, ...)' for the training labels >= ``classes``, or ''."""
    labels = data.train.labels
    stray = labels[labels >= classes]
    if not len(stray):
        return ""
    values, counts = torch.unique(stray, return_counts=True)
    shown = ", ".join(f"label {int(v)}: {int(c)} sample{'s' if int(c) != 1 else ''}" for v, c in zip(values[:5], counts[:5]))
    return f" ({shown})"


def check_teacher_classes(teacher_classes: int, data: Any) -> None:
    """The teacher must know every class the data's labels name."""
    if teacher_classes < data.num_classes:
        raise TransfuseError(
            f"the teacher predicts {teacher_classes} classes but data {data.name!r} has {data.num_classes}"
            f"{labels_beyond(data, teacher_classes)}; labels outside the teacher's classes 0..{teacher_classes - 1} "
            "are errors in the data (fix them) or need a teacher trained on those classes"
        )


def check_unfinished_run(out: Path, *, resume: bool, overwrite: bool) -> None:
    """A folder holding checkpoints of a run that did not finish is continued (--resume), or cleared
    (overwrite=true), never silently mixed with a new run."""
    root = out / "checkpoints"
    if resume or not root.is_dir() or not any(root.iterdir()):
        return
    if not overwrite:
        raise TransfuseError(
            f"output folder {str(out)!r} holds checkpoints of an earlier run; continue it with --resume, "
            "or start clean with overwrite=true (which deletes them)"
        )
    import shutil

    from .._console import console

    shutil.rmtree(root)
    console().print(f"overwrite=true: deleted the earlier run's checkpoints in {str(root)!r}; starting clean")


def check_output_folder(out: Path, *, finished: str, resume: bool, overwrite: bool) -> Path:
    """The one output rule of the training commands: a folder holding a finished run (its ``finished``
    file) is refused unless ``overwrite=true`` (or ``--resume``, which continues it); ``--resume``
    needs a checkpoint; checkpoints of an unfinished run are continued or, with overwrite, deleted."""
    if out.exists() and not out.is_dir():
        raise TransfuseError(f"output {str(out)!r} is a file, not a folder; choose another output=<folder>")
    if (out / finished).exists() and not (resume or overwrite):
        raise TransfuseError(
            f"output folder {str(out)!r} already holds a finished run; choose another output=... or set overwrite=true"
        )
    if resume and not (out / "checkpoints" / "latest").exists():
        raise TransfuseError(f"nothing to resume in {str(out)!r}: it has no checkpoint; run without --resume")
    check_unfinished_run(out, resume=resume, overwrite=overwrite)
    return out


def resolve_shipped(recipe, command: str):
    """The recipe path, or the shipped example of that name (``transfuse COMMAND NAME``); a folder is refused."""
    if recipe is None:
        return None
    path = Path(recipe)
    shipped = Path(__file__).parent / "configs" / f"{path.name}.yaml"
    if not path.exists() and path.suffix == "" and shipped.exists():
        return shipped
    if path.is_dir():
        raise TransfuseError(f"{str(path)!r} is a folder; give a {command} recipe .yaml file")
    return recipe
