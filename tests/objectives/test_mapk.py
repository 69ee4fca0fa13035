import pytest
import torch
import torch.nn.functional as F

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def _apk_official_style(actual, predicted, k):
    # the Kaggle apk the official code uses, written out again
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted[:k]):
        if p in actual and p not in predicted[:i]:
            hits += 1
            score += hits / (i + 1)
    return score / min(len(actual), k)


def test_mapk_coefficient_and_loss():
    t = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.5, 0.2]])
    s = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    y = torch.tensor([1, 3, 1])
    k = 2
    coeffs = []
    for row, gold in zip(t.tolist(), y.tolist()):
        ranked = sorted(range(4), key=lambda c: -row[c])
        coeffs.append(_apk_official_style([1], [1 if c == gold else 0 for c in ranked], k))
    assert coeffs == [0.5, 1.0, 0.0]
    T = 2.0
    kl = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
    want = sum(coeffs) / 3 * kl + F.cross_entropy(s, y)
    obj = build_objective("mapk", {"k": k})
    got = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(3), labels=y))
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert float(obj.last_coefficient) == pytest.approx(0.5)
