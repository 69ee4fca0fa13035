"""`transfuse.distill(...)` and `transfuse.merge(...)` stay callable after their subpackages are imported."""
import importlib

import torch
from torch.utils.data import DataLoader, TensorDataset

import transfuse


def test_distill_is_callable_before_and_after_submodule_imports():
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    first = transfuse.distill(torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), "kd", loader, progress=False)
    importlib.import_module("transfuse.distill.loop")  # this used to shadow the function with the package

    second = transfuse.distill(torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), "kd", loader, progress=False)
    assert first.steps == second.steps == 2


def test_merge_is_callable():
    importlib.import_module("transfuse.merge.engine")

    assert callable(transfuse.merge) and callable(transfuse.merge.merge)
