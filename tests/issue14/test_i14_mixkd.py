"""Issue 14 item 2: mixkd on two classes learns nothing (std-normalised logits are +-1/sqrt(2)); refused."""
import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def test_mixkd_refuses_two_classes_and_still_runs_on_three():
    obj = build_objective("mixkd")
    batch = Batch(inputs=torch.zeros(4, 3), labels=torch.tensor([0, 1, 0, 1]))
    with pytest.raises(TransfuseError, match="with 2 classes"):
        obj(Outputs(logits=torch.randn(4, 2)), Outputs(logits=torch.randn(4, 2)), batch)
    s = torch.randn(4, 3, requires_grad=True)
    obj(Outputs(logits=s), Outputs(logits=torch.randn(4, 3)), batch).backward()
    assert float(s.grad.abs().sum()) > 1e-4


def test_mixkd_on_two_classes_is_refused_before_anything_is_written(tabular, tmp_path):
    from transfuse.recipes.distill import main

    _, recipe = tabular
    with pytest.raises(TransfuseError, match="with 2 classes leaves only their sign"):
        main(recipe(objective__name="mixkd", teacher__cache=False), [])
    assert not (tmp_path / "out").exists()
