"""Shared check for the contract tests: a registered factory's signature is its schema (DESIGN.md rule 4)."""
import inspect


def check_signature(factory, context=()):
    """Docstring present; every parameter keyword-only, typed, and defaulted unless the caller supplies it."""
    sig = inspect.signature(factory)
    assert (inspect.getdoc(factory) or "").strip(), "a docstring names what it is"
    for name, p in sig.parameters.items():
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name} must be keyword-only"
        assert p.annotation is not inspect.Parameter.empty, f"{name} needs a type"
        if name not in context:
            assert p.default is not inspect.Parameter.empty, f"{name} needs a default"
