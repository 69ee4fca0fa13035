import inspect

import pytest

from transfuse.models import models


def _check_signature(factory, context=()):
    sig = inspect.signature(factory)
    assert (inspect.getdoc(factory) or "").strip(), "a docstring names what it is"
    for name, p in sig.parameters.items():
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name} must be keyword-only"
        assert p.annotation is not inspect.Parameter.empty, f"{name} needs a type"
        if name not in context:
            assert p.default is not inspect.Parameter.empty, f"{name} needs a default"


@pytest.mark.parametrize("name", models.names())
def test_model_factories_follow_the_style(name):
    factory = models.get(name)
    _check_signature(factory, context=("in_shape", "num_classes"))
    assert {"in_shape", "num_classes"} <= set(inspect.signature(factory).parameters)
