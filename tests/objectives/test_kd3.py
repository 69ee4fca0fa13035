import math

import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def test_kd3_selection_and_weights_by_hand():
    t = [[3.0, 0.0, 0.0], [0.1, 0.0, 0.2], [0.0, 2.0, 0.0]]
    s = [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    T = 2.0
    sm = lambda v: [math.exp(x) / sum(math.exp(y) for y in v) for x in v]  # noqa: E731
    total, chosen = 0.0, 0
    for ti, si in zip(t, s):
        pt, ps = sm(ti), sm(si)
        top = max(range(3), key=lambda c: pt[c])
        c = (pt[top] + ps[top]) / 2
        if c >= 0.5:
            chosen += 1
            a, b = sm([x / T for x in ti]), sm([x / T for x in si])
            total += c * sum(p * math.log(p / q) for p, q in zip(a, b)) * T * T
    assert chosen == 1  # only the first sample: confident teacher and agreeing student
    obj = build_objective("kd3", {"temperature": T, "feature_weight": 0.0, "ce_weight": 0.0, "teacher_dim": 2})
    h = {"penultimate": torch.zeros(3, 2)}
    got = obj(Outputs(logits=torch.tensor(s), hidden=h), Outputs(logits=torch.tensor(t), hidden=h), Batch(inputs=torch.zeros(3)))
    assert float(got) == pytest.approx(total / chosen, rel=1e-5)
    assert float(obj.selected_share) == pytest.approx(1 / 3)


def test_kd3_mix_view_keeps_shape_and_mixes_statistics():
    obj = build_objective("kd3", {"mix_prob": 1.0})
    x = torch.randn(8, 2, 4, 4) * torch.arange(1, 9.0).view(8, 1, 1, 1)
    out = obj.prepare(Batch(inputs=x, labels=torch.zeros(8, dtype=torch.long)), generator=torch.Generator().manual_seed(0))
    assert out.inputs.shape == x.shape
    assert not torch.allclose(out.inputs.std((2, 3)), x.std((2, 3)))
    # the normalised content of each sample is unchanged
    norm = lambda v: (v - v.mean((2, 3), keepdim=True)) / v.std((2, 3), keepdim=True)  # noqa: E731
    assert torch.allclose(norm(out.inputs), norm(x), atol=1e-4)
