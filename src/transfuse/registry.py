"""Registries: name -> component, discovered from a package's modules on first use.

Each component registers itself where it is defined (``@objectives.register("kd")``); the
first lookup imports every module of the registry's package, so adding a component is one
new file and no edit elsewhere. A dotted path (``my_pkg.losses.MyLoss``) reaches user code.
"""
from __future__ import annotations

import importlib
import pkgutil
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Generic, Iterator, List, TypeVar

from .errors import TransfuseError, closest

T = TypeVar("T")

#: folders a dotted path to user code is also looked up in (the recipe's folder, set by the recipe runner)
_user_code_dirs: List[Path] = []


@contextlib.contextmanager
def user_code_from(*folders: str | Path) -> Iterator[None]:
    """While running a recipe: dotted paths (``my_losses.MyLoss``) also resolve from these folders."""
    added = [Path(f).expanduser().resolve() for f in folders]
    _user_code_dirs[:0] = added
    try:
        yield
    finally:
        del _user_code_dirs[: len(added)]


def user_code_next_to(recipe: str | Path | None):
    """``user_code_from`` the recipe file's folder (nothing extra without a recipe): every recipe runner uses it."""
    return user_code_from(*([Path(recipe).expanduser().parent] if recipe is not None else []))


def import_user_object(dotted: str, kind: str) -> Any:
    """``pkg.module.Name`` imported from sys.path, else from the recipe's folder and the working directory
    (where a user keeps the module next to the recipe; no PYTHONPATH needed). A folder that holds the
    module is appended to sys.path so the module's own imports of its neighbours work too."""
    module_name, _, attr = dotted.rpartition(".")
    top = module_name.split(".")[0]
    looked = []
    for folder in [None, *_user_code_dirs, Path(os.getcwd()).resolve()]:
        if folder is not None:
            if str(folder) in looked:
                continue
            looked.append(str(folder))
            if not ((folder / f"{top}.py").is_file() or (folder / top).is_dir()):
                continue
            if str(folder) not in sys.path:
                sys.path.append(str(folder))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == top or module_name.startswith(exc.name + ".") or exc.name == module_name):
                continue  # not in this place: try the next one
            raise TransfuseError(f"importing {kind} {dotted!r} failed inside your module: {exc}") from None
        except ImportError as exc:
            raise TransfuseError(f"importing {kind} {dotted!r} failed inside your module: {exc}") from None
        if not hasattr(module, attr):
            raise TransfuseError(f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no {attr!r}; check the name after the last dot")
        return getattr(module, attr)
    raise TransfuseError(
        f"could not import {kind} {dotted!r}: no module {top!r} on sys.path nor in {' or '.join(looked)}; "
        f"put {top}.py next to the recipe or in the working directory, or check the dotted path"
    )


class Registry(Generic[T]):
    """A named table of components of one kind, filled by importing ``package``'s modules."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._items: Dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            try:
                obj.registry_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._items

    def get(self, name: str) -> T:
        """The component called ``name``, or one reached by a dotted import path."""
        self._discover()
        if name in self._items:
            return self._items[name]
        if "." in name:
            return import_user_object(name, self.kind)
        raise TransfuseError(
            f"unknown {self.kind} {name!r}.{closest(name, self._items)} "
            f"Run `transfuse list {self.kind}s` to see them all."
        )

    def describe(self) -> Dict[str, str]:
        """name -> first line of the component's docstring."""
        self._discover()
        out = {}
        for name, obj in sorted(self._items.items()):
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            out[name] = doc[0] if doc else ""
        return out


def build(registry: Registry[Any], name: str, params: Dict[str, Any] | None = None, **context: Any) -> Any:
    """Call the registered factory ``name`` with the user's ``params`` and the caller's ``context``.

    A wrong parameter name or type becomes one clear sentence naming the valid parameters.
    """
    import inspect

    factory = registry.get(name)
    params = dict(params or {})
    sig = inspect.signature(factory)
    accepted = [p for p in sig.parameters if p not in ("self",)]
    for key in params:
        if key not in sig.parameters:
            user_params = accepted
            raise TransfuseError(
                f"{registry.kind} {name!r} has no parameter {key!r}.{closest(key, user_params)} "
                f"Valid parameters: {', '.join(user_params) or 'none'}."
            )
    _check_types(registry, name, factory, params)
    ctx = {k: v for k, v in context.items() if k in sig.parameters and k not in params}  # params may override
    try:
        return factory(**ctx, **params)
    except (TypeError, ValueError) as exc:
        raise TransfuseError(f"bad parameters for {registry.kind} {name!r}: {exc}") from None


def _hints(factory: Any) -> Dict[str, Any]:
    """The factory's parameter annotations, resolved ({} when they cannot be)."""
    import typing

    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation naming something not importable here
        return {}


def describe_hint(hint: Any) -> str:
    """An annotation in words: "float", "one of 'a' or 'b'", Optional[X] as X (None is always accepted)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return describe_hint(args[0])
        return " or ".join(describe_hint(a) for a in args)
    if origin is typing.Literal:
        return "one of " + " or ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_types(registry: Registry[Any], name: str, factory: Any, params: Dict[str, Any]) -> None:
    """Each given parameter against its annotation (the signature is the schema), before the factory runs.

    Only checks: the user's value is passed on unchanged. Annotations pydantic cannot check
    (modules, callables) are skipped.
    """
    from pydantic import TypeAdapter, ValidationError

    hints = _hints(factory)
    for key, value in params.items():
        hint = hints.get(key)
        if hint is None or hint is Any:
            continue
        try:
            adapter = TypeAdapter(hint)
        except Exception:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError:
            shown = describe_hint(hint)
            raise TransfuseError(
                f"{registry.kind} {name!r}: parameter {key!r} must be {shown}; got {value!r} ({type(value).__name__})"
            ) from None
