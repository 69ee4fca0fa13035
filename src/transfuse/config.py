"""Config loading: a YAML file plus ``key.sub=value`` overrides -> a validated, typed config.

Config classes are pydantic models with ``extra="forbid"``; a wrong key or type becomes one
sentence that names the key and the closest valid ones. Recipes unpack configs; components
never see them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import TransfuseError, closest

C = TypeVar("C", bound=BaseModel)


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def read_yaml(path: str | Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise TransfuseError(f"config file {str(path)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TransfuseError(f"config file {str(path)!r} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise TransfuseError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return data


def apply_overrides(data: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Set ``a.b.c=value`` in a nested dict; the value is parsed as YAML (numbers, lists, null)."""
    for item in overrides:
        if "=" not in item:
            raise TransfuseError(f"override {item!r} must look like key.sub=value")
        key, _, raw = item.partition("=")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def _field_names(model: Type[BaseModel], loc: tuple) -> list[str]:
    """Valid field names at ``loc`` inside ``model`` (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        current = fields[part].annotation
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def validate(model: Type[C], data: Dict[str, Any], source: str = "config") -> C:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            hint = closest(loc[-1], _field_names(model, loc))
            raise TransfuseError(f"{source}: unknown key {key!r}.{hint}") from None
        if err["type"] == "missing":
            raise TransfuseError(f"{source}: missing required key {key!r}") from None
        raise TransfuseError(f"{source}: {key}: {err['msg']} (got {err.get('input')!r})") from None


def load_config(model: Type[C], path: str | Path | None, overrides: Iterable[str] = ()) -> C:
    """Read ``path`` (or start empty), apply overrides, validate against ``model``."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return validate(model, data, source=str(path) if path else "config")
