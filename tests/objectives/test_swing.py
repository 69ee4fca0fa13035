import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def test_swing_without_noise_is_kd_at_the_privacy_temperature():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.5, 0.2]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
    privacy = torch.tensor([0.0, 1.0])
    obj = build_objective("swing", {"t_min": 2.0, "t_max": 6.0, "noise_std": 0.0, "alpha": 1.0})
    got = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2), extra={"privacy": privacy}))
    want = 0.0
    for i, T in enumerate([2.0, 6.0]):
        p = torch.softmax(t[i] / T, 0)
        q = torch.log_softmax(s[i] / T, 0)
        want += float((p * (p.log() - q)).sum()) * T * T / 2
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_swing_default_score_is_teacher_gold_probability_and_noise_is_reproducible():
    s = torch.zeros(2, 3)
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 1])
    obj = build_objective("swing")
    score = obj.privacy_score(t, Batch(inputs=torch.zeros(2), labels=y))
    assert torch.allclose(score, torch.tensor([torch.softmax(t[0], 0)[0], 1 / 3]))
    a = build_objective("swing")(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2), labels=y))
    b = build_objective("swing")(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2), labels=y))
    assert torch.equal(a, b)
    obj2 = build_objective("swing")
    obj2(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2), labels=y))
    c = obj2(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2), labels=y))
    assert not torch.equal(a, c)  # the next call draws new noise
