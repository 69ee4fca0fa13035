
import pytest
import torch
from torch import nn

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


class _Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.register_buffer("logits", logits)

    def forward(self, x):
        return self.logits + self.w


def _kl(p_logits, q_logits):
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    return float((p * (p.log() - q.log())).sum())


def test_kldp_partitions_by_true_class_confidence():
    init = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    student = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0, 2])
    obj = build_objective("kldp")
    obj.bind(_Fixed(init))
    got = obj(Outputs(logits=student), Outputs(logits=teacher), Batch(inputs=torch.zeros(2), labels=labels))
    # sample 0: the initial student is more confident on class 0 -> KL to it; sample 1: teacher wins
    want = (_kl(init[0], student[0]) + _kl(teacher[1], student[1])) / 2
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(obj.teacher_share) == pytest.approx(0.5)


def test_kldp_copy_is_frozen_and_independent():
    model = nn.Linear(3, 2)
    obj = build_objective("kldp")
    obj.bind(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(obj.initial.weight, model.weight)
    assert not any(p.requires_grad for p in obj.initial.parameters())


def test_kldp_without_bind_says_so():
    with pytest.raises(RuntimeError, match="bind"):
        build_objective("kldp")(Outputs(logits=torch.zeros(1, 2)), Outputs(logits=torch.zeros(1, 2)), Batch(inputs=torch.zeros(1)))
