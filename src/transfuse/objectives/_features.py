"""Intermediate features through forward hooks, by module path, without editing the models.

A path names a submodule as in ``model.named_modules()`` (``"layer3"``, ``"blocks.2.mlp"``);
``"name:in"`` takes the module's input instead of its output, ``"name:1"`` item 1 of a module
that returns a tuple (a Hugging Face attention's probabilities); ``"penultimate"`` is the input
of the model's last ``nn.Linear`` (the features a classifier head sees).

    with capture(model, ["layer3", "penultimate"]) as hidden:
        logits = model(x)
    hidden["layer3"]  # (B, D, H, W)
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, Sequence, Tuple

from torch import Tensor, nn

from ..errors import TransfuseError, closest
from ..signals import Outputs, as_outputs

PENULTIMATE = "penultimate"


def resolve(model: nn.Module, path: str) -> Tuple[nn.Module, bool]:
    """The module a feature path names and whether its input (True) or output (False) is taken.

    For ``"name:K"`` (K a number) the output is taken; :func:`capture` then picks its item K."""
    if path == PENULTIMATE:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TransfuseError(
                f"{type(model).__name__} has no nn.Linear, so it has no 'penultimate' features; "
                "name a module path instead (see model.named_modules())"
            )
        return linears[-1], True
    name, _, side = path.partition(":")
    if side not in ("", "in", "out") and not side.isdigit():
        raise TransfuseError(f"feature path {path!r} must end in ':in', ':out' or ':<item number>' if it has a colon")
    modules = dict(model.named_modules())
    if name not in modules:
        raise TransfuseError(
            f"{type(model).__name__} has no module {name!r}.{closest(name, [n for n in modules if n])} "
            "Feature paths are names from model.named_modules()."
        )
    return modules[name], side == "in"


@contextmanager
def capture(model: nn.Module, paths: Sequence[str]) -> Iterator[Dict[str, Tensor]]:
    """Fill a dict path -> tensor while the block runs a forward of ``model``; hooks are removed after."""
    store: Dict[str, Tensor] = {}
    handles = []
    try:
        for path in dict.fromkeys(paths):
            module, take_input = resolve(model, path)

            _, sep, side = path.partition(":")
            item = int(side) if sep and side.isdigit() else 0

            def hook(_mod: nn.Module, args: tuple, out, path: str = path, take_input: bool = take_input, item: int = item) -> None:
                value = args[0] if take_input else out
                if isinstance(value, (tuple, list)):
                    if item >= len(value) or value[item] is None:
                        raise TransfuseError(
                            f"feature {path!r}: item {item} of the module's output is missing; for attention "
                            "probabilities build the model with attn_implementation=eager"
                        )
                    value = value[item]
                store[path] = value

            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def forward_with_features(model: nn.Module, inputs: Tensor, paths: Sequence[str] = (), **kwargs) -> Outputs:
    """``model(inputs, **kwargs)`` as Outputs with ``hidden`` filled from the feature ``paths``."""
    if not paths:
        return as_outputs(model(inputs, **kwargs))
    with capture(model, paths) as store:
        out = as_outputs(model(inputs, **kwargs))
    missing = [p for p in paths if p not in store]
    if missing:
        raise TransfuseError(f"feature path(s) {missing} did not run in the forward pass; pick modules the model uses")
    out.hidden.update(store)
    return out


def tokens(features: Tensor) -> Tensor:
    """Features as a set of tokens (B, N, D): (B, D) -> (B, 1, D); (B, D, H, W) -> (B, HW, D); (B, N, D) kept."""
    if features.dim() == 2:
        return features.unsqueeze(1)
    if features.dim() == 4:
        return features.flatten(2).transpose(1, 2)
    if features.dim() == 3:
        return features
    raise ValueError(f"cannot read features of shape {tuple(features.shape)} as tokens")


def penultimate_width(model: nn.Module) -> int:
    """in_features of the model's last nn.Linear: the width of its ``"penultimate"`` features."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TransfuseError(f"{type(model).__name__} has no nn.Linear head; give the feature width explicitly")
    return linears[-1].in_features


def teacher_model(teacher) -> "nn.Module | None":
    """The nn.Module behind a teacher argument: a module, a source holding ``.model``, or None."""
    if teacher is None or isinstance(teacher, nn.Module):
        return teacher
    return getattr(teacher, "model", None)


def hidden(outputs: Outputs, path: str, *, objective: str, side: str = "student") -> Tensor:
    """``outputs.hidden[path]``, or one sentence saying that the loop must capture it."""
    if path not in outputs.hidden:
        raise TransfuseError(
            f"objective {objective!r} needs the {side}'s features at {path!r}, but they were not captured; run the {side} "
            f"through transfuse.objectives._features.forward_with_features(model, inputs, objective.{side}_features)"
            + (" with a live teacher (cache: false)" if side == "teacher" else "")
        )
    return outputs.hidden[path]
