import math

import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def _softmax(v):
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def _hand_dkd(s, t, gold, alpha, beta, T):
    ps, pt = _softmax([x / T for x in s]), _softmax([x / T for x in t])
    bs, bt = [ps[gold], 1 - ps[gold]], [pt[gold], 1 - pt[gold]]
    tckd = sum(b * math.log(b / a) for a, b in zip(bs, bt))
    qs = [p / (1 - ps[gold]) for i, p in enumerate(ps) if i != gold]
    qt = [p / (1 - pt[gold]) for i, p in enumerate(pt) if i != gold]
    nckd = sum(b * math.log(b / a) for a, b in zip(qs, qt))
    return (alpha * tckd + beta * nckd) * T * T


def test_dkd_matches_hand_formula_and_warmup():
    s, t = [1.0, 2.0, 0.5, -1.0], [3.0, 0.0, 1.0, 0.2]
    obj = build_objective("dkd", {"ce_weight": 0.0, "warmup_epochs": 4})
    out = obj(Outputs(logits=torch.tensor([s])), Outputs(logits=torch.tensor([t])), Batch(inputs=torch.zeros(1), labels=torch.tensor([2])))
    assert float(out) == pytest.approx(_hand_dkd(s, t, 2, 1.0, 8.0, 4.0) / 4, rel=1e-4)  # epoch 1 of 4 warm-up
    obj.on_epoch_end(epoch=5, epochs=10)
    out = obj(Outputs(logits=torch.tensor([s])), Outputs(logits=torch.tensor([t])), Batch(inputs=torch.zeros(1), labels=torch.tensor([2])))
    assert float(out) == pytest.approx(_hand_dkd(s, t, 2, 1.0, 8.0, 4.0), rel=1e-4)
    assert float(obj.state_dict()["epoch"]) == 6.0


def test_dkd_unlabelled_uses_teacher_top_class():
    s, t = [0.3, -0.2, 1.0], [0.0, 2.0, 0.5]
    obj = build_objective("dkd", {"warmup_epochs": 0, "alpha": 0.5, "beta": 2.0, "temperature": 2.0})
    out = obj(Outputs(logits=torch.tensor([s])), Outputs(logits=torch.tensor([t])), Batch(inputs=torch.zeros(1), labels=torch.tensor([-1])))
    assert float(out) == pytest.approx(_hand_dkd(s, t, 1, 0.5, 2.0, 2.0), rel=1e-4)
