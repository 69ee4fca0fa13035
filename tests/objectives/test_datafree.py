import pytest
import torch
from torch import nn

from transfuse.objectives import build_objective
from transfuse.signals import Batch


def test_datafree_replaces_the_batch_and_trains_the_generator():
    torch.manual_seed(0)
    s = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    t = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    obj = build_objective("datafree", {"noise_dim": 4, "hidden": 8})
    obj.bind(s, teacher=t)
    real = torch.full((6, 1, 3, 4), 123.0)
    real[0, 0, 0, 0] = -1.0
    out = obj.prepare(Batch(inputs=real, labels=torch.arange(6), index=torch.arange(6)), generator=torch.Generator().manual_seed(0))
    assert out.inputs.shape == real.shape and out.labels is None and out.index is None
    assert out.inputs.max() <= 123.0 and not torch.equal(out.inputs, real)  # within the batch's bounds, not the batch
    before = [p.detach().clone() for p in obj.generator.parameters()]
    obj.prepare(Batch(inputs=real), generator=torch.Generator().manual_seed(1))
    assert any(not torch.equal(a, b) for a, b in zip(before, obj.generator.parameters()))
    state = obj.state_dict()
    fresh = build_objective("datafree", {"noise_dim": 4, "hidden": 8})
    fresh.load_state_dict(state)  # the generator is rebuilt from the checkpoint's shapes
    assert fresh.generator[6].weight.shape == (12, 8)


def test_datafree_needs_a_teacher_model():
    obj = build_objective("datafree")
    obj.bind(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="teacher"):
        obj.prepare(Batch(inputs=torch.zeros(2, 2)), generator=torch.Generator())


def test_datafree_input_range_is_checked():
    with pytest.raises(Exception, match="input_range"):
        build_objective("datafree", {"input_range": [1.0, 0.0]})
