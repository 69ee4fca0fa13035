import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def test_mixkd_loss_by_formula():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -0.5, 1.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 3.0]])
    soft = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.3, 0.7]])
    obj = build_objective("mixkd")
    got = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2), extra={"soft_labels": soft}))
    want = 0.0
    for i in range(2):
        ss = s[i] / s[i].std()
        tt = t[i] / t[i].std()
        ls = torch.log_softmax(ss, 0)
        pt = torch.softmax(tt, 0)
        want += 0.9 * float((pt * (pt.log() - ls)).sum()) / 2 + 0.1 * float(-(soft[i] * ls).sum()) / 2
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_mixkd_prepare_partial_mixup():
    x = torch.arange(20.0).view(20, 1)
    y = torch.arange(20)
    b = build_objective("mixkd").prepare(Batch(inputs=x, labels=y, index=torch.arange(20)), generator=torch.Generator().manual_seed(0))
    soft = b.extra["soft_labels"]
    assert soft.shape == (20, 20) and torch.allclose(soft.sum(-1), torch.ones(20))
    # a row with lambda = 1 is exactly the sample its index points to
    pure = soft.max(-1).values == 1.0
    assert pure.sum() >= 10  # most rows keep lambda = 1
    assert torch.equal(b.inputs[pure].view(-1), b.index[pure].float())
    # mixed rows: inputs = lam x1 + (1-lam) x2 with the same lam as in the labels
    again = build_objective("mixkd").prepare(Batch(inputs=x, labels=y, index=torch.arange(20)), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.inputs, b.inputs)  # same generator -> same mix
