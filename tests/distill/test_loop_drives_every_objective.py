"""The loop can drive every registered objective (features by hooks, prepare, bind, state)."""
import copy

import pytest
import torch

from transfuse.cache import CachedTeacher, LogitsCache
from transfuse.data import IndexedTensors
from transfuse.distill.loop import make_loader, train
from transfuse.errors import TransfuseError
from transfuse.models import build_model
from transfuse.objectives import build_objective, objectives
from transfuse.teachers import FrozenTeacher

EXAMPLE_PARAMS = {"combined": {"terms": [{"name": "kd", "weight": 1.0}, {"name": "ce", "weight": 0.5}]}}
# Token-level objectives that need LM-shaped outputs are exercised by tests/lm.
IMAGE_NAMES = [n for n in objectives.names()]


def _data(n=48):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :4].argmax(1)).long()
    y[::5] = -1  # some unlabelled samples
    return IndexedTensors(x, y)


@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_two_steps_with_a_live_teacher(name):
    torch.manual_seed(0)
    student = build_model("mlp", {"hidden": [16]}, in_shape=(1, 8, 8), num_classes=4)
    teacher = build_model("cnn", {"channels": [4], "hidden": 8}, in_shape=(1, 8, 8), num_classes=4)
    before = [p.detach().clone() for p in student.parameters()]
    objective = build_objective(name, EXAMPLE_PARAMS.get(name))
    n = getattr(objective, "teacher_members", (0,))[0]
    if n:  # mtard, metadmoe: an ensemble of teachers
        from transfuse.teachers import EnsembleModel

        teacher = EnsembleModel([teacher] + [copy.deepcopy(teacher) for _ in range(n - 1)], "mean")
    result = train(student=student, teacher=FrozenTeacher(teacher), objective=objective,
                   train_loader=make_loader(_data(), batch_size=16), max_steps=2, progress=False)
    assert result.steps == 2
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert any(not torch.equal(a, b.detach().cpu()) for a, b in zip(before, student.parameters())), f"{name} did not train the student"


def test_objective_that_changes_inputs_refuses_a_cache():
    changing = [n for n in objectives.names() if getattr(objectives.get(n), "changes_inputs", False)]
    assert changing, "no objective declares changes_inputs: this test would prove nothing"
    cache = LogitsCache(torch.arange(48), torch.zeros(48, 4), "fp")
    with pytest.raises(TransfuseError, match="set teacher.cache=false"):
        train(student=build_model("mlp", {}, in_shape=(1, 8, 8), num_classes=4), teacher=CachedTeacher(cache),
              objective=build_objective(changing[0]), train_loader=make_loader(_data(), batch_size=16),
              max_steps=1, progress=False)
