"""SelfTeacher (snapshot / EMA of the student), held-out splits, and a teacher with fewer classes."""
import copy

import pytest
import torch
from torch import nn

from transfuse.data import IndexedTensors
from transfuse.distill.loop import make_loader, train
from transfuse.errors import TransfuseError
from transfuse.objectives import build_objective
from transfuse.recipes.distill import hold_out
from transfuse.teachers import FrozenTeacher, SelfTeacher


def _data(n=64, c=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return IndexedTensors(x, x[:, :c].argmax(1))


def _student():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def test_snapshot_is_refreshed_at_epoch_ends():
    student = _student()
    teacher = SelfTeacher(every_epochs=2)
    seen = []

    from transfuse.objectives import Objective

    class SpyObjective(Objective):
        """kd, recording the teacher's first weight at every step."""

        def __init__(self):
            super().__init__()
            self.kd = build_objective("kd")

        def forward(self, s, t, b):
            seen.append(teacher.model[0].weight.detach().clone())
            return self.kd(s, t, b)

    initial = student[0].weight.detach().clone()
    train(student=student, teacher=teacher, objective=SpyObjective(), train_loader=make_loader(_data(), batch_size=16),
          epochs=3, progress=False)
    steps_per_epoch = 4
    # epochs 1-2: the student as it started; epoch 3: the student after epoch 2
    assert all(torch.equal(w, initial) for w in seen[: 2 * steps_per_epoch])
    assert not torch.equal(seen[2 * steps_per_epoch], initial)
    assert all(torch.equal(w, seen[2 * steps_per_epoch]) for w in seen[2 * steps_per_epoch :])
    # and the teacher never receives gradient updates of its own
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_ema_teacher_follows_the_student():
    student = _student()
    teacher = SelfTeacher(ema_decay=0.5)
    start = copy.deepcopy(student)
    train(student=student, teacher=teacher, objective=build_objective("kd"), train_loader=make_loader(_data(), batch_size=16),
          max_steps=1, progress=False)
    expected = 0.5 * start[0].weight + 0.5 * student[0].weight
    assert torch.allclose(teacher.model[0].weight, expected.detach(), atol=1e-6)


def test_resume_restores_the_self_teacher(tmp_path):
    def run(resume):
        return train(student=_student(), teacher=SelfTeacher(every_epochs=1), objective=build_objective("kd"),
                     train_loader=make_loader(_data(), batch_size=16), epochs=3, output_dir=tmp_path, checkpoint_every=6,
                     resume=resume, progress=False, lr=0.05).student

    full = run(False)  # leaves its last checkpoint at step 6 (mid epoch 2)
    resumed = run(True)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-7)


def test_held_out_goes_to_the_objective_and_out_of_training():
    data = _data()
    tgeo = build_objective("tgeo")
    rest = hold_out(data, 10, tgeo, seed=0)
    assert len(rest) == len(data) - 10
    held_x, held_y = tgeo._held_out
    assert len(held_x) == 10
    assert not set(rest.index.tolist()) & {i for i in range(len(data)) if any(torch.equal(data.inputs[i], h) for h in held_x)}
    with pytest.raises(TransfuseError, match="only used by objectives that train on a held-out split"):
        hold_out(data, 10, build_objective("kd"), seed=0)


def test_teacher_with_fewer_classes_only_where_the_objective_allows():
    data = _data()
    teacher = FrozenTeacher(nn.Linear(6, 2))  # knows the first 2 of 3 classes
    train(student=_student(), teacher=teacher, objective=build_objective("crkd"),
          train_loader=make_loader(data, batch_size=16), max_steps=2, progress=False)
    with pytest.raises(TransfuseError, match="teacher predicts 2 classes but the student 3"):
        train(student=_student(), teacher=teacher, objective=build_objective("kd"),
              train_loader=make_loader(data, batch_size=16), max_steps=2, progress=False)
