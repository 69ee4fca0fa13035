"""ce, kd, reverse_kl, jsd, combined against formulas written independently here (numpy)."""
import numpy as np
import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def _np_softmax(z, T=1.0):
    z = np.asarray(z, dtype=np.float64) / T
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_kl(p, q):
    return (p * (np.log(p) - np.log(q))).sum(-1)


S = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]])
T_ = torch.tensor([[0.5, 2.5, 0.0], [1.0, -2.0, 2.0], [3.0, 0.0, 1.0]])
Y = torch.tensor([1, -1, 0])  # the middle sample is unlabelled


def _run(name, params=None, labels=Y, mask=None, s=S, t=T_):
    return build_objective(name, params)(Outputs(s), Outputs(t), Batch(inputs=s, labels=labels, mask=mask)).item()


def test_ce_ignores_unlabelled():
    p = _np_softmax(S.numpy())
    expected = -(np.log(p[0, 1]) + np.log(p[2, 0])) / 2
    assert _run("ce") == pytest.approx(expected, rel=1e-6)


def test_kd_hinton():
    T, alpha = 4.0, 0.9
    kl = _np_kl(_np_softmax(T_.numpy(), T), _np_softmax(S.numpy(), T)).mean() * T * T
    p = _np_softmax(S.numpy())
    ce = -(np.log(p[0, 1]) + np.log(p[2, 0])) / 2
    assert _run("kd", {"temperature": T, "alpha": alpha}) == pytest.approx(alpha * kl + (1 - alpha) * ce, rel=1e-5)
    assert _run("kd", {"temperature": T, "alpha": 1.0}) == pytest.approx(kl, rel=1e-5)


def test_reverse_kl():
    T = 2.0
    expected = _np_kl(_np_softmax(S.numpy(), T), _np_softmax(T_.numpy(), T)).mean() * T * T
    assert _run("reverse_kl", {"temperature": T}) == pytest.approx(expected, rel=1e-5)


def test_jsd_generalized():
    beta = 0.3
    ps, pt = _np_softmax(S.numpy()), _np_softmax(T_.numpy())
    m = beta * pt + (1 - beta) * ps
    expected = (beta * _np_kl(pt, m) + (1 - beta) * _np_kl(ps, m)).mean()
    assert _run("jsd", {"beta": beta}) == pytest.approx(expected, rel=1e-5)
    # symmetric at beta = 0.5: swapping student and teacher changes nothing
    assert _run("jsd", {"beta": 0.5}) == pytest.approx(_run("jsd", {"beta": 0.5}, s=T_, t=S), rel=1e-6)


def test_jsd_refuses_degenerate_beta():
    from transfuse.errors import TransfuseError

    with pytest.raises(TransfuseError, match="beta"):
        build_objective("jsd", {"beta": 0.0})


def test_combined_is_the_weighted_sum():
    terms = [{"name": "ce", "weight": 0.25}, {"name": "reverse_kl", "weight": 2.0, "params": {"temperature": 2.0}}]
    expected = 0.25 * _run("ce") + 2.0 * _run("reverse_kl", {"temperature": 2.0})
    assert _run("combined", {"terms": terms}) == pytest.approx(expected, rel=1e-6)


def test_token_mask_selects_positions():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    kl = _np_kl(_np_softmax(t.numpy()), _np_softmax(s.numpy()))  # (2, 4)
    expected = (kl * mask.numpy()).sum() / mask.sum().item()
    got = build_objective("kd", {"temperature": 1.0, "alpha": 1.0})(Outputs(s), Outputs(t), Batch(inputs=s, mask=mask)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_ce_label_smoothing():
    eps = 0.2
    p = _np_softmax(S.numpy())
    rows = [(0, 1), (2, 0)]
    expected = np.mean([-(1 - eps) * np.log(p[i, y]) - eps * np.log(p[i]).mean() for i, y in rows])
    assert _run("ce", {"label_smoothing": eps}) == pytest.approx(expected, rel=1e-5)
