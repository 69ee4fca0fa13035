import pytest
import torch
from torch import nn

from transfuse.objectives import build_objective
from transfuse.objectives._functional import kl
from transfuse.signals import Batch


def _models():
    torch.manual_seed(0)
    s = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    t = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 4))
    return s, t


def test_hard_doubles_the_batch_and_learns_to_disagree():
    s, t = _models()
    obj = build_objective("hard", {"aug_lr": 0.05, "teacher_weight": 0.0})
    obj.bind(s, teacher=t)
    x = torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    b = obj.prepare(Batch(inputs=x, labels=torch.zeros(16, dtype=torch.long), index=torch.arange(16)), generator=torch.Generator().manual_seed(2))
    assert b.inputs.shape == (32, 1, 6, 6) and torch.equal(b.inputs[:16], x)
    assert b.index.tolist() == list(range(16)) * 2

    def gap():
        with torch.no_grad():
            xa = obj.augment(x, torch.Generator().manual_seed(3))
            return float(kl(t(xa), s(xa)).mean())

    first = gap()
    for i in range(30):
        obj.prepare(Batch(inputs=x), generator=torch.Generator().manual_seed(10 + i))
    assert gap() > first  # the augmentor found views where the two models disagree more
    assert all(p.grad is None for p in list(s.parameters()) + list(t.parameters()))


def test_hard_needs_a_teacher_model():
    s, _ = _models()
    obj = build_objective("hard")
    obj.bind(s)
    with pytest.raises(ValueError, match="teacher"):
        obj.prepare(Batch(inputs=torch.zeros(2, 1, 6, 6)), generator=torch.Generator())
