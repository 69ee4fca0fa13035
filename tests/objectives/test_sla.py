import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transfuse.objectives import build_objective
from transfuse.objectives._features import forward_with_features
from transfuse.signals import Batch


def test_sla_rotations_and_loss_by_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 6), nn.ReLU(), nn.Linear(6, 3))
    obj = build_objective("sla")
    obj.bind(model)
    x = torch.randn(2, 1, 3, 3)
    y = torch.tensor([2, 0])
    b = obj.prepare(Batch(inputs=x, labels=y, index=torch.tensor([7, 8])), generator=torch.Generator())
    assert b.inputs.shape == (8, 1, 3, 3)
    assert torch.equal(b.inputs[1], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert b.labels.tolist() == [2, 2, 2, 2, 0, 0, 0, 0]
    out = forward_with_features(model, b.inputs, obj.student_features)
    got = obj(out, None, b)
    # the same loss written with explicit loops
    joint = obj.joint(out.hidden["penultimate"])  # (8, 12), column = 4 c + r
    joint_y = torch.tensor([2 * 4 + r for r in range(4)] + [0 * 4 + r for r in range(4)])
    single = out.logits[[0, 4]]
    agg = torch.stack([sum(joint[4 * i + r, [4 * c + r for c in range(3)]] for r in range(4)) / 4 for i in range(2)])
    want = F.cross_entropy(joint, joint_y) + F.cross_entropy(single, y) + F.kl_div(single.log_softmax(-1), agg.detach().softmax(-1), reduction="batchmean")
    assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_sla_refuses_non_square_inputs():
    with pytest.raises(ValueError, match="square"):
        build_objective("sla").prepare(Batch(inputs=torch.zeros(2, 5)), generator=torch.Generator())
