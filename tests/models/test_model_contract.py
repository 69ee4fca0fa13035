import inspect

import pytest
from factory_style import check_signature

from transfuse.models import models


@pytest.mark.parametrize("name", models.names())
def test_model_factories_follow_the_style(name):
    factory = models.get(name)
    check_signature(factory, context=("in_shape", "num_classes"))
    assert {"in_shape", "num_classes"} <= set(inspect.signature(factory).parameters)
