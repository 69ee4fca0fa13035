import math

import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_crkd_gate_and_known_class_kl_by_hand():
    # 2 known classes (teacher), student has 3 (one novel); logit_temperature 1, T 2
    s = [[1.0, 0.0, 2.0], [0.5, 1.5, -1.0]]
    t = [[2.0, 0.0], [0.0, 1.0]]
    T = 2.0
    gates, kls = [], []
    for si, ti in zip(s, t):
        p_all = _softmax([x / T for x in si])
        gates.append(p_all[0] + p_all[1])
        p_new = _softmax([x / T for x in si[:2]])
        p_old = _softmax([x / T for x in ti])
        kls.append(sum(o * math.log(o / n) for o, n in zip(p_old, p_new)))
    mean_gate = sum(gates) / 2
    want = 0.1 * sum(g / mean_gate * k * T * T for g, k in zip(gates, kls)) / 2
    obj = build_objective("crkd", {"temperature": T, "logit_temperature": 1.0, "ce_weight": 0.0})
    got = obj(Outputs(logits=torch.tensor(s)), Outputs(logits=torch.tensor(t)), Batch(inputs=torch.zeros(2), labels=torch.tensor([-1, -1])))
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_crkd_gate_is_not_detached():
    s = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], requires_grad=True)
    obj = build_objective("crkd", {"ce_weight": 0.0, "logit_temperature": 1.0})
    loss = obj(Outputs(logits=s), Outputs(logits=torch.tensor([[1.0, 0.0], [0.0, 2.0]])), Batch(inputs=torch.zeros(2)))
    loss.backward()
    assert s.grad[0, 2] != 0  # the novel logit only enters through the gate (w / batch mean of w)


def test_crkd_rejects_student_narrower_than_teacher():
    obj = build_objective("crkd")
    with pytest.raises(ValueError, match="fewer than"):
        obj(Outputs(logits=torch.zeros(1, 2)), Outputs(logits=torch.zeros(1, 3)), Batch(inputs=torch.zeros(1)))


def test_official_ce_form_is_kl_plus_teacher_entropy():
    import torch

    from transfuse.objectives import build_objective
    from transfuse.signals import Batch, Outputs

    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g)
    batch = Batch(inputs=s, labels=torch.full((4,), -1))
    kl_form = build_objective("crkd", {"ce_weight": 0.0})
    ce_form = build_objective("crkd", {"ce_weight": 0.0, "official_ce": True})
    scale = 0.1 * 4.0
    p_old = torch.softmax(t / scale, -1)
    gate = torch.softmax(s / scale, -1)[:, :3].sum(-1)
    weight = gate / gate.mean()
    entropy = -(p_old * p_old.log()).sum(-1)
    expected_gap = 0.1 * (weight * entropy).mean() * 16.0
    gap = ce_form(Outputs(s), Outputs(t), batch) - kl_form(Outputs(s), Outputs(t), batch)
    assert torch.allclose(gap, expected_gap, rtol=1e-4)
