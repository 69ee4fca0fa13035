import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def test_tgeo_loss_is_ratio_weighted_kd_and_ce():
    obj = build_objective("tgeo")
    s = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, -1])
    got = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2), labels=y))
    a = torch.sigmoid(torch.tensor(2.2))  # the MLP starts at a constant ratio (zero last weights)
    kd = [F.kl_div(F.log_softmax(s[i] / 4, -1), F.softmax(t[i] / 4, -1), reduction="sum") * 16 for i in range(2)]
    want = (a * kd[0] + (1 - a) * F.cross_entropy(s[:1], y[:1]) + kd[1]) / 2
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    # running class mean of the teacher's probabilities: only sample 0 is labelled (class 0)
    assert torch.allclose(obj.class_mean[0], F.softmax(t[0], -1))


def test_tgeo_meta_step_moves_the_ratio_network_only():
    torch.manual_seed(0)
    student = nn.Linear(4, 3)
    obj = build_objective("tgeo", {"meta_lr": 0.05})
    obj.bind(student)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    obj.set_held_out(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    t = torch.randn(8, 3)
    obj(Outputs(logits=student(x)), Outputs(logits=t), Batch(inputs=x, labels=y))
    before = [p.detach().clone() for p in obj.mlp.parameters()]
    w = student.weight.detach().clone()
    obj(Outputs(logits=student(x)), Outputs(logits=t), Batch(inputs=x, labels=y))
    assert any(not torch.equal(b, p) for b, p in zip(before, obj.mlp.parameters()))
    assert torch.equal(w, student.weight)  # the look-ahead is functional: the student is untouched
    assert all(p.grad is None for p in obj.mlp.parameters())
