"""LM objectives against independent formulas on tiny tensors; the top-k (sparse) teacher; TAID's schedule."""
from __future__ import annotations

import math

import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.objectives._functional import pair_logprobs
from transfuse.objectives.lssd import swap_gold_with_max
from transfuse.signals import Batch, Outputs

torch.set_default_dtype(torch.float32)


def _data(seed=0, B=2, T=4, V=9):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, generator=g, dtype=torch.float64).float()
    t = torch.randn(B, T, V, generator=g, dtype=torch.float64).float() * 2
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    return s, t, mask


def _p(z, T=1.0):
    z = z.double() / T
    e = (z - z.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def _masked(v, mask):
    return float((v * mask).sum() / mask.sum())


def _run(name, s, t, mask, labels=None, **params):
    obj = build_objective(name, params)
    return obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(mask.shape, dtype=torch.long), labels=labels, mask=mask))


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_forward_kl_formula(T):
    s, t, mask = _data()
    ps, pt = _p(s, T), _p(t, T)
    want = _masked((pt * (pt / ps).log()).sum(-1), mask) * T * T
    assert float(_run("forward_kl", s, t, mask, temperature=T)) == pytest.approx(want, rel=1e-5)


def test_tvd_formula():
    s, t, mask = _data(1)
    want = _masked(0.5 * (_p(s) - _p(t)).abs().sum(-1), mask)
    assert float(_run("tvd", s, t, mask)) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_skew_kl_formula(reverse):
    s, t, mask = _data(2)
    ps, pt, a = _p(s), _p(t), 0.1
    if reverse:  # KL(p_s || a p_s + (1-a) p_t)
        want = _masked((ps * (ps / (a * ps + (1 - a) * pt)).log()).sum(-1), mask)
    else:  # KL(p_t || a p_t + (1-a) p_s)
        want = _masked((pt * (pt / (a * pt + (1 - a) * ps)).log()).sum(-1), mask)
    assert float(_run("skew_kl", s, t, mask, alpha=a, reverse=reverse)) == pytest.approx(want, rel=1e-5)


def test_skew_kl_alpha_zero_is_plain_kl():
    s, t, mask = _data(3)
    assert float(_run("skew_kl", s, t, mask, alpha=0.0)) == pytest.approx(float(_run("forward_kl", s, t, mask)), rel=1e-6)
    assert float(_run("skew_kl", s, t, mask, alpha=0.0, reverse=True)) == pytest.approx(float(_run("reverse_kl", s, t, mask)), rel=1e-6)


def test_taid_value_and_gradient():
    s, t, mask = _data(4)
    s = s.requires_grad_()
    obj = build_objective("taid", {"t_start": 0.3})
    loss = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2, 4), mask=mask))
    target = _p(0.7 * s.detach() + 0.3 * t)  # softmax is shift-invariant: logits or log-probs give one target
    logq = torch.log(_p(s.detach()))
    assert float(loss) == pytest.approx(_masked(-(target * logq).sum(-1), mask), rel=1e-5)
    loss.backward()
    # gradient of the CE with a fixed target = (q - target) / count on counted tokens
    want = (_p(s.detach()) - target) * mask.unsqueeze(-1) / mask.sum()
    assert torch.allclose(s.grad.double(), want, atol=1e-6)


def test_taid_schedule_follows_the_official_update():
    obj = build_objective("taid", {"t_start": 0.4, "alpha": 0.05, "beta": 0.9})
    losses = [2.0, 1.5, 1.4, 1.6, 1.0]
    t, m, prev, total = 0.4, 0.0, math.inf, 100
    for step, loss in enumerate(losses, 1):
        obj.on_step_end(step=step, total_steps=total, loss=loss)
        if math.isinf(prev):
            prev = loss
        else:
            m = 0.9 * m + 0.1 * (prev - loss) / prev
            ramp = 0.4 + 0.6 * step / total
            t = min(1.0, max(ramp, t + 0.05 / (1 + math.exp(-m)) * (1 - t)))
            prev = loss
        assert float(obj.t) == pytest.approx(t, rel=1e-6)
        assert float(obj.momentum) == pytest.approx(m, rel=1e-5, abs=1e-7)
    state = obj.state_dict()  # t travels with checkpoints
    fresh = build_objective("taid", {"t_start": 0.4, "alpha": 0.05, "beta": 0.9})
    fresh.load_state_dict(state)
    assert float(fresh.t) == pytest.approx(t) and float(fresh.prev_loss) == pytest.approx(prev)


def test_taid_without_adaptation_is_the_linear_ramp():
    obj = build_objective("taid", {"adaptive": False})
    for step in range(1, 6):
        obj.on_step_end(step=step, total_steps=10, loss=1.0 / step)
    assert float(obj.t) == pytest.approx(0.4 + 0.6 * 0.5)


def test_lssd_swap_by_hand():
    z = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 1.0], [0.0, 1.0, 4.0]])
    got = swap_gold_with_max(z, torch.tensor([2, 0, -1]))
    want = torch.tensor([[1.0, 2.0, 5.0], [3.0, 0.0, 1.0], [0.0, 1.0, 4.0]])
    assert torch.equal(got, want)


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6)])
def test_lssd_formula_classifier_and_tokens(shape):
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    labels = torch.randint(0, 6, shape[:-1], generator=g)
    mask = torch.ones(shape[:-1], dtype=torch.bool) if len(shape) == 3 else None
    target = _p(swap_gold_with_max(t, labels))
    want = float((target * (target / _p(s)).log()).sum(-1).mean())
    obj = build_objective("lssd")
    got = obj(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(shape[:-1]), labels=labels, mask=mask))
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert int(target.argmax(-1).eq(labels).all()) == 1  # the gold token is the target's argmax


def test_lssd_refuses_a_topk_teacher():
    obj = build_objective("lssd")
    with pytest.raises(ValueError, match="dense"):
        obj(Outputs(logits=torch.randn(1, 2, 5)), Outputs(topk_logprobs=torch.zeros(1, 2, 1), topk_indices=torch.zeros(1, 2, 1)),
            Batch(inputs=torch.zeros(1, 2), labels=torch.zeros(1, 2, dtype=torch.long)))


# ---- sparse (top-k) teacher: the missing mass is one extra bucket ----

def _topk(t, k):
    lp = torch.log_softmax(t.float(), -1)
    top, idx = lp.topk(k, -1)
    return top, idx


def test_topk_with_k_equal_v_matches_dense():
    s, t, mask = _data(6)
    top, idx = _topk(t, t.shape[-1])
    for name in ["forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl", "taid"]:
        obj = build_objective(name)
        batch = Batch(inputs=torch.zeros(2, 4), mask=mask)
        dense = obj(Outputs(logits=s), Outputs(logits=t), batch)
        sparse = obj(Outputs(logits=s), Outputs(topk_logprobs=top, topk_indices=idx), batch)
        assert float(sparse) == pytest.approx(float(dense), rel=1e-4, abs=1e-5), name


def test_topk_buckets_by_hand():
    """K < V: teacher top-k + rest bucket vs student mass on those tokens + its mass elsewhere."""
    s, t, mask = _data(7)
    k = 3
    top, idx = _topk(t, k)
    ps, pt = _p(s), _p(t)
    pt_top = pt.gather(-1, idx)
    ps_top = ps.gather(-1, idx)
    pt_b = torch.cat([pt_top, 1 - pt_top.sum(-1, keepdim=True)], -1)
    ps_b = torch.cat([ps_top, 1 - ps_top.sum(-1, keepdim=True)], -1)
    batch = Batch(inputs=torch.zeros(2, 4), mask=mask)
    sparse_t = Outputs(topk_logprobs=top, topk_indices=idx)
    fkl = float(build_objective("forward_kl")(Outputs(logits=s), sparse_t, batch))
    rkl = float(build_objective("reverse_kl")(Outputs(logits=s), sparse_t, batch))
    tvd = float(build_objective("tvd")(Outputs(logits=s), sparse_t, batch))
    assert fkl == pytest.approx(_masked((pt_b * (pt_b / ps_b).log()).sum(-1), mask), rel=1e-4)
    assert rkl == pytest.approx(_masked((ps_b * (ps_b / pt_b).log()).sum(-1), mask), rel=1e-4)
    assert tvd == pytest.approx(_masked(0.5 * (ps_b - pt_b).abs().sum(-1), mask), rel=1e-4)
    # a lower bound of the dense divergence (data-processing inequality)
    dense = float(build_objective("forward_kl")(Outputs(logits=s), Outputs(logits=t), batch))
    assert fkl <= dense + 1e-6


def test_topk_gradient_only_moves_tail_mass():
    """The student's tail keeps its shape: the gradient on two tail logits is proportional to their probs."""
    s, t, _ = _data(8, B=1, T=1, V=9)
    top, idx = _topk(t, 3)
    s = s.requires_grad_()
    sl, tl = pair_logprobs(Outputs(logits=s), Outputs(topk_logprobs=top, topk_indices=idx))
    loss = (tl.exp() * (tl - sl)).sum()
    loss.backward()
    tail = [v for v in range(9) if v not in idx.flatten().tolist()]
    g, p = s.grad[0, 0, tail], _p(s.detach())[0, 0, tail]
    assert torch.allclose((g / p).float(), (g / p)[0].expand(len(tail)).float(), rtol=1e-4)
