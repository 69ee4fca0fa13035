"""FGSM and PGD robust accuracy, checked on linear models where the worst case is known exactly."""
import pytest
import torch
import torch.nn.functional as F

from transfuse.data import IndexedTensors
from transfuse.errors import TransfuseError
from transfuse.eval import pgd_attack, robust_accuracy


def _linear(seed=0, d=6):
    torch.manual_seed(seed)
    model = torch.nn.Linear(d, 2)
    x = torch.randn(400, d)
    y = model(x).argmax(-1)  # the model is right on every clean sample
    return model, x, y


def _data(x, y):
    return IndexedTensors(inputs=x, labels=y)


def test_fgsm_is_one_signed_gradient_step():
    model, x, y = _linear()
    x = x[:8].requires_grad_(True)
    F.cross_entropy(model(x), y[:8]).backward()
    want = x.detach() + 0.3 * x.grad.sign()
    got = pgd_attack(model, x.detach(), y[:8], eps=0.3, steps=1, step_size=0.3, random_start=False)
    assert torch.allclose(got, want)


def test_pgd_stays_in_the_ball_and_the_bounds():
    model, x, y = _linear()
    x = x.clamp(0, 1)
    adv = pgd_attack(model, x, y, eps=0.05, steps=7, bounds=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_reaches_the_exact_worst_case_of_a_linear_model():
    """For two classes the worst L-inf perturbation lowers the margin by eps * ||w_y - w_other||_1."""
    model, x, y = _linear()
    eps = 0.15
    w = model.weight.detach()
    margin = (model(x).detach() * F.one_hot(y, 2) * 2 - model(x).detach()).sum(-1)  # z_y - z_other
    robust_exact = int((margin > eps * (w[0] - w[1]).abs().sum()).sum()) / len(y)
    got = robust_accuracy(model, _data(x, y), attack="pgd", eps=eps, steps=20)
    assert got["robust_accuracy"] == pytest.approx(robust_exact, abs=1e-9)
    assert got["attack"] == "pgd20" and got["samples"] == 400
    # on a linear model the single FGSM step is already the worst case
    assert robust_accuracy(model, _data(x, y), attack="fgsm", eps=eps)["robust_accuracy"] == pytest.approx(robust_exact)


def test_eps_zero_is_clean_accuracy_and_larger_eps_is_never_better():
    model, x, y = _linear()
    accs = [robust_accuracy(model, _data(x, y), eps=e, steps=5)["robust_accuracy"] for e in (0.0, 0.05, 0.2, 0.5)]
    assert accs[0] == 1.0
    assert all(a >= b for a, b in zip(accs, accs[1:])) and accs[-1] < accs[0]


def test_model_parameters_get_no_gradient_and_mode_is_restored():
    model, x, y = _linear()
    model.train()
    robust_accuracy(model, _data(x, y), eps=0.1, steps=2)
    assert model.training and all(p.grad is None for p in model.parameters())


def test_bad_attack_and_unlabelled_data_are_clear_errors():
    model, x, y = _linear()
    with pytest.raises(TransfuseError, match="attack=pgd or attack=fgsm"):
        robust_accuracy(model, _data(x, y), attack="cw")
    with pytest.raises(TransfuseError, match="labelled samples"):
        robust_accuracy(model, _data(x, torch.full_like(y, -1)))
