import inspect

import pytest
from factory_style import check_signature

from transfuse.data import DataSplits, datasets


@pytest.mark.parametrize("name", datasets.names())
def test_dataset_factories_follow_the_style(name):
    factory = datasets.get(name)
    check_signature(factory)
    assert inspect.signature(factory).return_annotation in (DataSplits, "DataSplits")
