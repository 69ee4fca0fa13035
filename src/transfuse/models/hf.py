"""HF: a Hugging Face ``AutoModelForImageClassification`` / ``AutoModelForSequenceClassification`` by path.

The one module that imports transformers (lazily, when the factory runs). ``path`` is a local
folder written by ``save_pretrained``; a hub id (``org/name``) is tried only when no such
folder exists and the machine is online. ``trust_remote_code`` stays off unless asked. The
returned model is the transformers model itself: forward(inputs) gives an output with
``.logits`` (B, C), and ``save_pretrained`` works on it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Tuple

from torch import nn

from ..errors import TransfuseError
from . import models

_TASKS = {"image": "AutoModelForImageClassification", "sequence": "AutoModelForSequenceClassification"}
_DTYPES = ("float32", "bfloat16", "float16", "auto")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_shapes(config: Any, task: str, in_shape: Tuple[int, ...], where: str) -> None:
    """Refuse data the model cannot take, when the model is built rather than at the first batch."""
    if task == "image":
        channels = getattr(config, "num_channels", None)
        if channels is not None and len(in_shape) == 3 and in_shape[0] != channels:
            raise TransfuseError(
                f"the model in {where} takes {channels}-channel images but the data has {in_shape[0]} "
                f"(in_shape {tuple(in_shape)}); convert the images (e.g. image_folder grayscale={channels == 1})"
            )
        size = getattr(config, "image_size", None)
        if isinstance(size, int) and len(in_shape) == 3 and tuple(in_shape[1:]) != (size, size):
            raise TransfuseError(
                f"the model in {where} takes {size}x{size} images but the data has {in_shape[1]}x{in_shape[2]}; "
                f"resize the data to {size} (e.g. image_folder size={size})"
            )
    else:
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and len(in_shape) == 1 and in_shape[0] > limit:
            raise TransfuseError(
                f"the model in {where} reads at most {limit} tokens but the data has sequences of {in_shape[0]}; "
                "truncate the texts"
            )


@models.register("hf")
def hf(
    *,
    in_shape: Tuple[int, ...],
    num_classes: int,
    path: str = "",
    task: str = "image",
    trust_remote_code: bool = False,
    ignore_mismatched_sizes: bool = False,
    dtype: str = "float32",
) -> nn.Module:
    """Hugging Face AutoModelFor{Image,Sequence}Classification from a local save_pretrained folder.

    task: "image" or "sequence". ignore_mismatched_sizes: replace a classifier head whose
    num_labels differs from the data's class count with a fresh one. dtype: float32, bfloat16,
    float16 or auto (the checkpoint's own).
    """
    if task not in _TASKS:
        raise TransfuseError(f"hf task must be one of {', '.join(_TASKS)}; got {task!r}")
    if dtype not in _DTYPES:
        raise TransfuseError(f"hf dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
    if not path:
        raise TransfuseError("hf needs path=<folder written by save_pretrained>")
    folder = Path(path).expanduser()
    local = folder.is_dir()
    if not local and (folder.exists() or not _HUB_ID.match(path)):
        raise TransfuseError(f"Hugging Face model folder {str(folder)!r} does not exist; pass path=<folder written by save_pretrained>")
    if local and not (folder / "config.json").is_file():
        raise TransfuseError(f"{str(folder)!r} has no config.json; pass a folder written by save_pretrained")

    import torch
    import transformers

    where = str(folder) if local else path
    try:
        config = transformers.AutoConfig.from_pretrained(
            where, trust_remote_code=trust_remote_code, local_files_only=local
        )
    except Exception as exc:  # transformers raises OSError, ValueError, ... for bad or unreachable configs
        hint = " (it asks for custom code: pass trust_remote_code=true only if you trust it)" if "trust_remote_code" in str(exc) else ""
        raise TransfuseError(f"could not load the model config from {where}{hint}: {_first_line(exc)}") from None
    if config.num_labels != num_classes and not ignore_mismatched_sizes:
        raise TransfuseError(
            f"the model in {where} has {config.num_labels} labels but the data has {num_classes} classes; "
            "pass ignore_mismatched_sizes=true to replace its classifier head with a fresh one"
        )
    _check_shapes(config, task, tuple(in_shape), where)
    auto = getattr(transformers, _TASKS[task])
    kwargs: dict = {"trust_remote_code": trust_remote_code, "local_files_only": local}
    kwargs["dtype"] = "auto" if dtype == "auto" else getattr(torch, dtype)
    if config.num_labels != num_classes:
        kwargs.update(num_labels=num_classes, ignore_mismatched_sizes=True)
    try:
        model = auto.from_pretrained(where, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise TransfuseError(
                f"the model in {where} ({type(config).__name__}) has no {_TASKS[task]} class; "
                f"check task={task!r} or pick a classification checkpoint"
            ) from None
        raise TransfuseError(f"could not load the model from {where}: {_first_line(exc)}") from None
    except Exception as exc:
        raise TransfuseError(f"could not load the model from {where}: {_first_line(exc)}") from None
    return model
