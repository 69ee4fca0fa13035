"""dml and bdkd losses on hand-made tensors against the formulas written out element by element."""
import math

import pytest
import torch

from transfuse.online import build_method
from transfuse.signals import Batch, Outputs


def _p(row, T=1.0):
    z = [v / T for v in row]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _h(p):
    return -sum(a * math.log(a) for a in p)


def _ce(row, label):
    return -math.log(_p(row)[label])


S = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]]  # student logits (B=3, C=3)
T_ = [[1.0, 1.0, 0.0], [3.0, -2.0, 0.5], [0.0, 0.0, 0.0]]  # the other model's logits
U = [[0.5, -0.5, 2.0], [1.0, 0.0, -1.0], [2.0, 2.0, -3.0]]  # a third model
Y = [0, 2, -1]  # the last sample is unlabelled


def _batch():
    return Batch(inputs=torch.zeros(3, 1), labels=torch.tensor(Y))


def _ce_mean(rows):
    known = [(r, y) for r, y in zip(rows, Y) if y >= 0]
    return sum(_ce(r, y) for r, y in known) / len(known)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_dml_is_ce_plus_mean_kl_from_each_peer(temperature):
    objective = build_method("dml", {"temperature": temperature, "kl_weight": 0.7}).objectives(3)[0]
    peers = Outputs(logits=torch.tensor([T_, U]))  # (P=2, B, C)
    got = objective(Outputs(logits=torch.tensor(S)), peers, _batch()).item()
    kl = sum(_kl(_p(q, temperature), _p(s, temperature)) for peer in (T_, U) for q, s in zip(peer, S)) / 6
    want = _ce_mean(S) + 0.7 * temperature**2 * kl
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_bdkd_student_mixes_forward_and_reverse_kl_by_entropy(temperature):
    student_objective = build_method("bdkd", {"temperature": temperature, "kl_weight": 0.5}).objectives(2)[1]
    got = student_objective(Outputs(logits=torch.tensor(S)), Outputs(logits=torch.tensor([T_])), _batch()).item()
    terms = []
    for s_row, t_row in zip(S, T_):
        ps, pt = _p(s_row, temperature), _p(t_row, temperature)
        w_r = _h(ps) / (_h(ps) + _h(pt))
        terms.append((1 - w_r) * _kl(pt, ps) + w_r * _kl(ps, pt))
    want = _ce_mean(S) + 0.5 * temperature**2 * sum(terms) / 3
    assert got == pytest.approx(want, rel=1e-5)
    # the balance is not a fixed 50/50: a symmetric mix gives another value
    sym = _ce_mean(S) + 0.5 * temperature**2 * sum(0.5 * _kl(_p(t, temperature), _p(s, temperature)) + 0.5 * _kl(_p(s, temperature), _p(t, temperature)) for s, t in zip(S, T_)) / 3
    assert abs(got - sym) > 1e-4


def test_bdkd_teacher_takes_its_reverse_kl_to_each_student():
    teacher_objective = build_method("bdkd", {"teacher_kl_weight": 2.0}).objectives(3)[0]
    got = teacher_objective(Outputs(logits=torch.tensor(T_)), Outputs(logits=torch.tensor([S, U])), _batch()).item()
    ce = sum(_ce(r, y) for r, y in zip(T_, Y) if y >= 0) / 2
    kl = sum(_kl(_p(t), _p(s)) for peer in (S, U) for t, s in zip(T_, peer)) / 6
    assert got == pytest.approx(ce + 2.0 * kl, rel=1e-5)


def test_bdkd_weights_follow_the_entropy_gap():
    from transfuse.online.methods.bdkd import balance_weights

    sharp = torch.log_softmax(torch.tensor([[8.0, 0.0, 0.0]]), -1)
    flat = torch.log_softmax(torch.tensor([[0.1, 0.0, 0.0]]), -1)
    w_f, w_r = balance_weights(flat, sharp)  # a student less confident than its teacher: mostly reverse KL
    assert w_r.item() > 0.8 and w_f.item() == pytest.approx(1 - w_r.item())
    w_f, w_r = balance_weights(sharp, flat)  # more confident: mostly forward KL
    assert w_f.item() > 0.8
    w_f, w_r = balance_weights(flat, flat)
    assert w_r.item() == pytest.approx(0.5)


def test_bdkd_gradient_reaches_only_its_own_model():
    s = torch.tensor(S, requires_grad=True)
    t = torch.tensor([T_], requires_grad=True)
    loss = build_method("bdkd").objectives(2)[1](Outputs(logits=s), Outputs(logits=t), _batch())
    loss.backward()
    assert s.grad.abs().sum() > 0 and (t.grad is None or t.grad.abs().sum() == 0)


@pytest.mark.parametrize("method", ["dml", "bdkd"])
def test_mgda_weighting_is_per_student_min_norm_of_its_own_terms(method):
    from torch import nn

    from transfuse.objectives._functional import cross_entropy
    from transfuse.objectives._mgda import min_norm_weights

    torch.manual_seed(0)
    models = [nn.Linear(4, 3), nn.Linear(4, 3)]
    x = torch.randn(6, 4)
    batch = Batch(inputs=x, labels=torch.tensor([0, 1, 2, 0, -1, 1]))
    objectives = build_method(method, {"weighting": "mgda", "temperature": 2.0}).objectives(2)
    seen = []
    for i, (model, objective) in enumerate(zip(models, objectives)):
        objective.bind(model)
        own = model(x)
        peer = models[1 - i](x).detach().unsqueeze(0)  # (1, B, C)
        loss = objective(Outputs(logits=own), Outputs(logits=peer), batch)
        # by hand: the gradients of the CE term and of the (T^2-scaled) divergence term over this model's parameters
        fixed = build_method(method, {"temperature": 2.0}).objectives(2)[i]  # without labels: the divergence term alone
        ce = cross_entropy(own, batch.labels)
        div = fixed(Outputs(logits=own), Outputs(logits=peer), Batch(inputs=x, labels=None))
        g = torch.stack([torch.cat([p.reshape(-1) for p in torch.autograd.grad(t, list(model.parameters()), retain_graph=True)]) for t in (ce, div)])
        want = min_norm_weights(g @ g.t())
        assert torch.allclose(objective.mgda_weights, want, atol=1e-5)
        assert loss.item() == pytest.approx((want[0] * ce + want[1] * div).item(), rel=1e-5)
        seen.append(objective.mgda_weights.clone())
    assert not torch.allclose(seen[0], seen[1])  # each student has its own weights


def test_mgda_weighting_trains_in_the_shared_optimizer_loop():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import _online_script
    from transfuse.distill.loop import make_loader
    from transfuse.online.loop import train_students

    runs = {}
    for weighting in ("fixed", "mgda"):
        runs[weighting] = train_students(_online_script.make_students(), build_method("dml", {"weighting": weighting}),
                                         make_loader(_online_script.make_data(), batch_size=64, seed=0), epochs=1, lr=0.02,
                                         shared_optimizer=True).students
    diff = (runs["fixed"][1].state_dict()["2.weight"] - runs["mgda"][1].state_dict()["2.weight"]).abs().max()
    assert diff > 1e-4
