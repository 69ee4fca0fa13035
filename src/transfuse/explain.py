"""What a user may write: each component's parameters and every recipe key, read from the code itself.

Nothing here is hand-written per component: parameters come from ``inspect.signature`` and the
resolved annotations (the same signature :func:`transfuse.registry.build` checks a recipe's
``params`` against), recipe keys from the pydantic models the recipe is validated with, and a
parameter's description from a ``name: text`` line of the component's docstring when it has one.
So a new parameter or key shows up here the moment it exists.
"""
from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any, Dict, List, Optional

from .errors import TransfuseError, closest

#: ``transfuse list WHAT`` -> (module, registry attribute), and the parameters the caller fills in
REGISTRIES = {
    "objectives": ("transfuse.objectives", "objectives"),
    "datasets": ("transfuse.data", "datasets"),
    "models": ("transfuse.models", "models"),
    "merge-methods": ("transfuse.merge.methods", "methods"),
    "fusion-rules": ("transfuse.fusion.rules", "rules"),
    "continual-methods": ("transfuse.continual.methods", "methods"),
    "online-methods": ("transfuse.online.methods", "methods"),
    "federated-methods": ("transfuse.federate.methods", "methods"),
}
_FROM_CONTEXT = {"models": {"in_shape", "num_classes"}}  # build_model passes these from the data


def registry(what: str):
    """The registry ``transfuse list WHAT`` names."""
    if what not in REGISTRIES:
        valid = list(REGISTRIES) + ["recipes"]
        raise TransfuseError(f"cannot list {what!r}.{closest(what, valid)} Valid: {', '.join(valid)}.")
    module, attr = REGISTRIES[what]
    return getattr(importlib.import_module(module), attr)


def _type_name(hint: Any) -> str:
    from .registry import describe_hint

    if hint is inspect.Parameter.empty:
        return "any"
    text = describe_hint(hint)
    return text.replace("typing.", "").replace("NoneType", "None")


def _doc_lines(obj: Any) -> Dict[str, str]:
    """``name: text`` lines of a docstring (the convention of this code base's factories)."""
    out: Dict[str, str] = {}
    for raw in (inspect.getdoc(obj) or "").splitlines():
        head, sep, text = raw.strip().partition(":")
        if sep and text.strip():
            for name in head.split("/"):
                name = name.strip()
                if name.isidentifier():
                    out.setdefault(name, text.strip())
    return out


def parameters(obj: Any, *, skip: frozenset = frozenset()) -> List[Dict[str, str]]:
    """One row per user parameter of a factory or class: name, type, default and its docstring line."""
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that cannot be resolved here
        hints = {}
    docs = {**_doc_lines(obj), **(_doc_lines(target) if target is not obj else {})}
    rows = []
    for name, p in sig.parameters.items():
        if name in ("self", "cls") or name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = "(required)" if p.default is inspect.Parameter.empty else repr(p.default)
        rows.append({"parameter": name, "type": _type_name(hints.get(name, p.annotation)), "default": default,
                     "description": docs.get(name, "")})
    return rows


def config_keys(model: Any, prefix: str = "") -> List[Dict[str, str]]:
    """Every key of a pydantic config model, nested sections flattened to dotted keys (data.batch_size)."""
    from pydantic import BaseModel

    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        hint = field.annotation
        inner = [a for a in (typing.get_args(hint) or (hint,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if inner and inner[0] is not model:
            rows.append({"key": key, "type": "section", "default": "" if field.is_required() else "(optional)"})
            rows += config_keys(inner[0], key + ".")
            continue
        if field.is_required():
            default = "(required)"
        elif field.default_factory is not None:
            default = repr(field.default_factory())
        else:
            default = repr(field.default)
        rows.append({"key": key, "type": _type_name(hint), "default": default})
    return rows


def recipe_keys() -> List[Dict[str, str]]:
    """Every key of a ``transfuse distill`` recipe."""
    from .recipes.distill import DistillConfig

    return config_keys(DistillConfig)


def first_line(obj: Any) -> str:
    doc = (inspect.getdoc(obj) or "").strip().splitlines()
    return doc[0] if doc else ""


def find(name: str) -> List[Dict[str, Any]]:
    """Each registered component called ``name`` (one per registry that has it): kind, summary, parameters.

    ``recipe`` (or ``distill``) gives the recipe keys instead.
    """
    if name in ("recipe", "recipes", "distill"):
        return [{"kind": "recipe", "name": "distill recipe", "summary": "every key of a transfuse distill YAML recipe "
                 "(set on the command line as key.sub=value)", "rows": recipe_keys()}]
    found = []
    for what in REGISTRIES:
        reg = registry(what)
        if name in reg.names():
            obj = reg.get(name)
            found.append({"kind": what.rstrip("s"), "name": name, "summary": inspect.getdoc(obj) or "",
                          "rows": parameters(obj, skip=frozenset(_FROM_CONTEXT.get(what, ())))})
    if not found:
        everything = [n for what in REGISTRIES for n in registry(what).names()] + ["recipe"]
        raise TransfuseError(f"nothing is called {name!r}.{closest(name, everything)} Run `transfuse list objectives` "
                             "(or datasets, models, ...) to see the names, or `transfuse explain recipe` for the recipe keys.")
    return found


def parameter_summary(obj: Any, what: str) -> str:
    """A one-cell list of a component's parameters with defaults: "temperature=4.0, alpha=0.9"."""
    rows = parameters(obj, skip=frozenset(_FROM_CONTEXT.get(what, ())))
    return ", ".join(r["parameter"] + ("" if r["default"] == "(required)" else f"={r['default']}") for r in rows)


def _table(rows: List[Dict[str, str]], title: Optional[str] = None):
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", title=title, title_justify="left")
    for column in (rows[0] if rows else {"parameter": ""}):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[str(v) for v in row.values()])
    return table


def print_list(what: str, verbose: bool = False) -> None:
    """``transfuse list WHAT [--verbose]``: names and summaries; with verbose each one's parameters
    (for recipes: the shipped recipes, then every recipe key)."""
    from ._console import console

    if what == "recipes":
        from .recipes.distill import shipped_recipes

        rows = [{"recipe": k, "description": v} for k, v in shipped_recipes().items()]
        console().print(_table(rows))
        if verbose:
            console().print(_table(recipe_keys(), title="recipe keys (transfuse distill; override as key.sub=value)"))
        return
    reg = registry(what)
    rows = []
    for name, line in reg.describe().items():
        row = {what.rstrip("s"): name, "description": line}
        if verbose:
            row["parameters"] = parameter_summary(reg.get(name), what)
        rows.append(row)
    console().print(_table(rows))
    if verbose:
        console().print(f"`transfuse explain NAME` describes one {what.rstrip('s')} and each of its parameters.")


def print_explain(name: str) -> None:
    """``transfuse explain NAME``: a component's docstring and a table of its parameters (or the recipe keys)."""
    from ._console import console

    for item in find(name):
        console().print(f"[bold]{item['name']}[/bold] ({item['kind']})")
        if item["summary"]:
            console().print(item["summary"], markup=False, highlight=False)
        if item["rows"]:
            console().print(_table(item["rows"]))
        elif item["kind"] != "recipe":
            console().print("(no parameters)")
