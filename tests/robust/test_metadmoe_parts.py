"""metadmoe's pieces: the inner step, the own-domain mask, the aggregator's masking, test-time adaptation."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transfuse.data import IndexedTensors
from transfuse.errors import TransfuseError
from transfuse.objectives import build_objective
from transfuse.signals import Batch
from transfuse.teachers import EnsembleModel


def _net(seed, d_in=6, d_hidden=4, c=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh(), nn.Linear(d_hidden, c))


def _bound(**params):
    obj = build_objective("metadmoe", {"width": 8, "heads": 2, **params})
    student = _net(0)
    experts = EnsembleModel([_net(1), _net(2), _net(3)], "mean")
    obj.bind(student, teacher=experts)
    return obj, student


def test_inner_step_is_one_sgd_step_on_the_feature_error():
    obj, student = _bound(inner_lr=0.5)
    x, target = torch.randn(5, 6), torch.randn(5, 4)
    params = dict(student.named_parameters())
    adapted = obj.adapt(params, x, target, create_graph=False)
    w, b = student[0].weight.detach().clone().requires_grad_(True), student[0].bias.detach().clone().requires_grad_(True)
    F.mse_loss(torch.tanh(x @ w.t() + b), target).backward()  # the penultimate = the head's input = tanh(...)
    assert torch.allclose(adapted["0.weight"], student[0].weight - 0.5 * w.grad, atol=1e-6)
    assert torch.allclose(adapted["0.bias"], student[0].bias - 0.5 * b.grad, atol=1e-6)
    assert adapted["2.weight"] is params["2.weight"]  # the head is not adapted


def test_own_domain_expert_is_masked_from_the_ids():
    obj, _ = _bound()
    mask = obj.own_domain_mask(Batch(inputs=torch.zeros(4, 6), index=torch.tensor([0, 4, 5, 9])), 3)
    assert mask.tolist() == [[True, False, False], [False, True, False], [False, False, True], [True, False, False]]
    agg = obj.aggregator
    feats = [torch.randn(2, 4) for _ in range(3)]
    drop = torch.tensor([[True, False, False], [True, False, False]])
    changed = [feats[0] * 100, feats[1], feats[2]]
    assert torch.allclose(agg(feats, drop), agg(changed, drop), atol=1e-5)  # a masked expert has no say


def test_meta_loss_reaches_student_and_aggregator_through_the_inner_step():
    obj, student = _bound()
    x = torch.randn(8, 6)
    loss = obj(None, None, Batch(inputs=x, labels=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), index=torch.arange(8)))
    loss.backward()
    assert student[0].weight.grad is not None and student[0].weight.grad.abs().sum() > 0
    assert obj.aggregator.to_student.weight.grad.abs().sum() > 0  # only through the adapted weights (MAML)


def test_test_time_adaptation_reports_accuracies_and_keeps_the_weights():
    obj, student = _bound()
    before = [p.detach().clone() for p in student.parameters()]
    data = IndexedTensors(torch.randn(10, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]))
    got = obj.test_time_adapt(student, data, batch_size=4)
    assert set(got) == {"tta_accuracy", "aggregator_accuracy"} and 0 <= got["tta_accuracy"] <= 1
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_one_expert_is_refused():
    obj = build_objective("metadmoe")
    with pytest.raises(TransfuseError, match="two or more"):
        obj.bind(_net(0), teacher=_net(1))
