import math

import pytest
import torch
from torch import nn

from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs


def _identity_projector(obj, d):
    obj.projector = nn.Linear(d, d)
    with torch.no_grad():
        obj.projector.weight.copy_(torch.eye(d))
        obj.projector.bias.zero_()


def _norm(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_trg_terms_by_hand():
    hs = [[[1.0, 0.0], [1.0, 1.0]], [[0.0, 2.0], [1.0, -1.0]]]  # (B=2, N=2, D=2)
    ht = [[[1.0, 0.5], [0.0, 1.0]], [[1.0, 1.0], [2.0, -1.0]]]
    zs = [[_norm(v) for v in inst] for inst in hs]
    zt = [[_norm(v) for v in inst] for inst in ht]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    node = sum(sum((a - b) ** 2 for a, b in zip(zs[i][j], zt[i][j])) for i in range(2) for j in range(2)) / 4
    fs = [v for inst in zs for v in inst]
    ft = [v for inst in zt for v in inst]
    edge = sum((dot(fs[i], fs[j]) - dot(ft[i], ft[j])) ** 2 for i in range(4) for j in range(4)) / 16
    tau = 0.5
    ctx = 0.0
    for i in range(2):
        for j in range(2):
            rs = [dot(zs[i][j], zs[i][k]) / tau for k in range(2)]
            rt = [dot(zt[i][j], zt[i][k]) / tau for k in range(2)]
            ps = [math.exp(x) / sum(math.exp(y) for y in rs) for x in rs]
            pt = [math.exp(x) / sum(math.exp(y) for y in rt) for x in rt]
            ctx += sum(b * math.log(b / a) for a, b in zip(ps, pt)) / 4
    obj = build_objective("trg", {"alpha": 1.0, "tau": tau, "node_weight": 1.0, "edge_weight": 2.0, "context_weight": 3.0, "teacher_dim": 2})
    _identity_projector(obj, 2)
    logits = torch.zeros(2, 3)
    got = obj(Outputs(logits=logits, hidden={"penultimate": torch.tensor(hs)}), Outputs(logits=logits, hidden={"penultimate": torch.tensor(ht)}), Batch(inputs=torch.zeros(2)))
    assert float(got) == pytest.approx(node + 2 * edge + 3 * ctx, rel=1e-5)


def test_trg_cnn_cells_are_tokens_and_projector_is_saved():
    obj = build_objective("trg", {"teacher_dim": 4})
    s = Outputs(logits=torch.randn(2, 3), hidden={"penultimate": torch.randn(2, 6, 3, 3)})  # 9 cells of width 6
    t = Outputs(logits=torch.randn(2, 3), hidden={"penultimate": torch.randn(2, 4, 3, 3)})
    loss = obj(s, t, Batch(inputs=torch.zeros(2), labels=torch.tensor([0, 1])))
    assert torch.isfinite(loss)
    assert obj.state_dict()["projector.weight"].shape == (4, 6)


def test_trg_without_width_says_how_to_fix():
    with pytest.raises(ValueError, match="teacher_dim"):
        build_objective("trg")(Outputs(logits=torch.zeros(1, 2), hidden={"penultimate": torch.zeros(1, 2)}), Outputs(logits=torch.zeros(1, 2), hidden={"penultimate": torch.zeros(1, 2)}), Batch(inputs=torch.zeros(1)))
