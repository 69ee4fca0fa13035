"""Contract every registered objective keeps (timm's pattern: a new file is tested once it exists).

Each objective is built with its defaults, bound to a tiny student and teacher, asked to
prepare the batch, and run on outputs taken the way the loop takes them (features by hooks).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from transfuse.objectives import build_objective, objectives
from transfuse.objectives._features import forward_with_features
from transfuse.signals import Batch

NAMES = objectives.names()
C = 5


def _image_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, C))


def _image_batch(b: int = 6) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        inputs=torch.randn(b, 1, 4, 4, generator=g),
        labels=torch.tensor([0, 1, 2, 3, 4, -1][:b]),
        index=torch.arange(b),
    )


class _TinyLM(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(7, 8)
        self.head = nn.Linear(8, 7)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.embed(ids)))  # (B, T, V)


# Objectives with a required parameter get these in the contract tests.
EXAMPLE_PARAMS = {"combined": {"terms": [{"name": "kd", "weight": 1.0}]}}


def _build(name):
    return build_objective(name, EXAMPLE_PARAMS.get(name))


def _teacher_for(name, teacher):
    """Objectives that read several teachers (mtard, metadmoe) get an ensemble of copies of ``teacher``."""
    n = getattr(objectives.get(name), "teacher_members", (0,))[0]
    if not n:
        return teacher
    from transfuse.teachers import EnsembleModel

    return EnsembleModel([teacher] + [copy.deepcopy(teacher) for _ in range(n - 1)], "mean")


def _run(name, student, teacher, batch, *, teacher_grad=False):
    obj = _build(name)
    teacher = _teacher_for(name, teacher)
    obj.bind(student, teacher=teacher)
    batch = obj.prepare(batch, generator=torch.Generator().manual_seed(1))
    s = forward_with_features(student, batch.inputs, obj.student_features)
    with torch.set_grad_enabled(teacher_grad):
        t = forward_with_features(teacher, batch.inputs, obj.teacher_features)
    return obj, obj(s, t, batch)


@pytest.mark.parametrize("name", NAMES)
def test_finite_scalar_and_grad_only_to_student(name):
    student, teacher = _image_model(0), _image_model(1)
    _, loss = _run(name, student, teacher, _image_batch(), teacher_grad=True)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "no gradient reached the student"
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in teacher.parameters()), "gradient reached the teacher"


@pytest.mark.parametrize("name", NAMES)
def test_docstring_names_the_source(name):
    doc = (objectives.get(name).__doc__ or "").strip()
    assert doc, f"{name} has no docstring"


@pytest.mark.parametrize("name", [n for n in NAMES if objectives.get(n).is_divergence])
def test_zero_when_student_equals_teacher(name):
    student = _image_model(0)
    teacher = copy.deepcopy(student)
    batch = _image_batch()
    batch.labels = None  # a pure divergence: no supervised term
    _, loss = _run(name, student, teacher, batch)
    assert abs(float(loss.detach())) < 1e-5


@pytest.mark.parametrize("name", [n for n in NAMES if objectives.get(n).supports_tokens])
def test_masked_positions_do_not_matter(name):
    student, teacher = _TinyLM(0), _TinyLM(1)
    ids = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 3:] = False
    labels = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(3))
    labels[~mask] = -100
    _, base = _run(name, student, teacher, Batch(inputs=ids, labels=labels, mask=mask))
    ids2 = ids.clone()
    ids2[:, 3:] = (ids2[:, 3:] + 1) % 7  # change only masked positions
    _, changed = _run(name, student, teacher, Batch(inputs=ids2, labels=labels, mask=mask))
    assert torch.allclose(base, changed, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    """State (buffers, learned parts) survives a save/load, so checkpoints carry it."""
    student, teacher = _image_model(0), _image_model(1)
    obj, loss = _run(name, student, teacher, _image_batch())
    obj.on_epoch_end(epoch=0, epochs=3)
    state = obj.state_dict()
    fresh = _build(name)
    fresh.bind(student, teacher=_teacher_for(name, teacher))
    fresh.prepare(_image_batch(), generator=torch.Generator().manual_seed(1))
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
