"""mtard's update rules and loss on hand tensors (B-MTARD's code: zhaoshiji123/MTARD-extension)."""
import pytest
import torch
import torch.nn.functional as F

from transfuse.errors import TransfuseError
from transfuse.objectives import build_objective
from transfuse.objectives.mtard import balance_temperatures, balance_weights, entropy
from transfuse.teachers import EnsembleModel


def test_the_teacher_with_more_entropy_is_sharpened_the_other_softened():
    # adversarial teacher less sure: its temperature goes down (clamped at 1), the clean one's up
    assert balance_temperatures(1.0, 1.0, 2.0, 1.0, rate=0.1, low=1.0, high=10.0) == (1.0, 1.1)
    assert balance_temperatures(3.0, 2.0, 1.0, 2.0, rate=0.5, low=1.0, high=10.0) == (3.5, 1.5)
    assert balance_temperatures(10.0, 1.0, 0.5, 2.0, rate=0.5, low=1.0, high=10.0) == (10.0, 1.0)  # clamps
    assert balance_temperatures(2.0, 2.0, 1.0, 1.0, rate=0.5, low=1.0, high=10.0) == (2.0, 2.0)  # balanced: stay


def test_weights_move_towards_the_share_of_the_normalised_losses():
    w = balance_weights(torch.tensor([0.5, 0.5]), torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0]), rate=0.025)
    # relative losses 2 and 1 -> shares 2/3, 1/3; each weight moves 2.5% of the way there
    assert torch.allclose(w, torch.tensor([0.5 + 0.025 * (2 / 3 - 0.5), 0.5 - 0.025 * (0.5 - 1 / 3)]))
    # the loss still far from its start gains weight; initial losses normalise different scales away
    w2 = balance_weights(torch.tensor([0.5, 0.5]), torch.tensor([10.0, 1.0]), torch.tensor([20.0, 1.0]), rate=1.0)
    assert torch.allclose(w2, torch.tensor([1 / 3, 2 / 3]))
    assert balance_weights(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.ones(2), rate=1.0).tolist() == [0.0, 1.0]


def test_loss_is_the_weighted_pair_of_tempered_kls_and_the_state_moves():
    obj = build_objective("mtard")
    g = torch.Generator().manual_seed(0)
    s_nat, s_adv, t_nat, t_adv = (torch.randn(4, 3, generator=g) for _ in range(4))
    obj.temperatures.copy_(torch.tensor([2.0, 3.0]))  # (tau_adv, tau_nat)
    obj.weights.copy_(torch.tensor([0.3, 0.7]))
    got = obj.loss_from_logits(s_nat, s_adv, t_nat, t_adv, update=False)
    kl_adv = F.kl_div(F.log_softmax(s_adv, -1), F.softmax(t_adv / 2.0, -1), reduction="batchmean")
    kl_nat = F.kl_div(F.log_softmax(s_nat, -1), F.softmax(t_nat / 3.0, -1), reduction="batchmean")
    assert torch.allclose(got, 0.3 * kl_adv + 0.7 * kl_nat, atol=1e-6)
    # one training step: the first losses are recorded, the temperatures take one step of the rule
    obj.loss_from_logits(s_nat, s_adv, t_nat, t_adv, update=True)
    assert torch.allclose(obj.initial_losses, torch.stack([kl_adv, kl_nat]).detach(), atol=1e-6)
    want = balance_temperatures(2.0, 3.0, float(entropy(t_adv, 2.0)), float(entropy(t_nat, 3.0)), rate=0.001, low=1.0, high=10.0)
    assert torch.allclose(obj.temperatures, torch.tensor(want))
    assert float(obj.weights.sum()) == pytest.approx(1.0)


def test_prepare_doubles_the_batch_with_pgd_examples_in_the_ball():
    from transfuse.signals import Batch

    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    teachers = EnsembleModel([torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)) for _ in range(2)], "mean")
    obj = build_objective("mtard", {"eps": 0.1, "steps": 3})
    obj.set_input_range((0.0, 2.0))  # eps 0.1 of a range of 2 -> 0.2 in input units
    obj.bind(student, teacher=teachers)
    x = torch.rand(5, 1, 4, 4) * 2
    out = obj.prepare(Batch(inputs=x, labels=torch.tensor([0, 1, 2, -1, 0]), index=torch.arange(5)), generator=torch.Generator().manual_seed(0))
    assert out.inputs.shape[0] == 10 and torch.equal(out.inputs[:5], x)
    delta = (out.inputs[5:] - x).abs().max()
    assert 0 < delta <= 0.2 + 1e-6 and out.inputs.min() >= 0 and out.inputs.max() <= 2


def test_one_teacher_is_refused_with_a_fix():
    obj = build_objective("mtard")
    with pytest.raises(TransfuseError, match="teacher.ensemble = \\[clean teacher, adversarially robust teacher\\]"):
        obj.bind(torch.nn.Linear(4, 2), teacher=torch.nn.Linear(4, 2))
