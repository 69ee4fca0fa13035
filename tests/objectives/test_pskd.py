import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def test_pskd_targets_follow_last_epoch_predictions():
    obj = build_objective("pskd", {"alpha_T": 0.8})
    idx = torch.tensor([3, 0])
    y = torch.tensor([1, 0])
    first = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    # epoch 0: targets are the one-hot labels
    got = obj(Outputs(logits=first), None, Batch(inputs=torch.zeros(2), labels=y, index=idx))
    want = torch.nn.functional.cross_entropy(first, y)
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    obj.on_epoch_end(epoch=1, epochs=4)  # one epoch done: a_t = 0.8 * 2/4 = 0.4
    second = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    got = obj(Outputs(logits=second), None, Batch(inputs=torch.zeros(2), labels=y, index=idx))
    prev = torch.softmax(first, -1)
    one_hot = torch.nn.functional.one_hot(y, 2).float()
    target = 0.6 * one_hot + 0.4 * prev
    want = -(target * torch.log_softmax(second, -1)).sum(-1).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert torch.allclose(obj.predictions[3], torch.softmax(second[0], -1))


def test_pskd_buffer_survives_state_dict():
    obj = build_objective("pskd")
    obj(Outputs(logits=torch.randn(2, 3)), None, Batch(inputs=torch.zeros(2), labels=torch.tensor([0, 1]), index=torch.tensor([5, 1])))
    fresh = build_objective("pskd")
    fresh.load_state_dict(obj.state_dict())
    assert torch.equal(fresh.predictions, obj.predictions) and fresh.predictions.shape == (6, 3)


def test_pskd_needs_index():
    with pytest.raises(ValueError, match="index"):
        build_objective("pskd")(Outputs(logits=torch.zeros(1, 2)), None, Batch(inputs=torch.zeros(1), labels=torch.tensor([0])))
