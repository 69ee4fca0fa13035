import pytest
import torch

from transfuse.objectives import build_objective
from transfuse.objectives._gtsd_toy import kernel_ridge_self_distillation
from transfuse.signals import Batch, Outputs


def test_gtsd_loss_by_formula():
    s = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, 1.0]])
    t = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([2, -1])
    p, q = s.softmax(-1), t.softmax(-1)
    oh = torch.tensor([0.0, 0.0, 1.0])
    row0 = 0.6 * ((p[0] - oh) ** 2).mean() + 0.4 * ((p[0] - q[0]) ** 2).mean()
    row1 = ((p[1] - q[1]) ** 2).mean()
    got = build_objective("gtsd")(Outputs(logits=s), Outputs(logits=t), Batch(inputs=torch.zeros(2), labels=y))
    assert float(got) == pytest.approx(float(row0 + row1) / 2, rel=1e-6)


def test_kernel_ridge_toy_reproduces_the_readme_table():
    # Kennethborup/self_distillation README: steps 1..6 and the limit, alpha 0 and 0.35
    losses, limit = kernel_ridge_self_distillation(0.0, 6)
    assert losses == pytest.approx([0.16477, 0.15076, 0.14915, 0.15561, 0.16735, 0.18251], abs=6e-6)
    assert limit == pytest.approx(0.49505, abs=6e-6)
    losses, limit = kernel_ridge_self_distillation(0.35, 6)
    assert losses == pytest.approx([0.16477, 0.15424, 0.15089, 0.14983, 0.14954, 0.14948], abs=6e-6)
    assert limit == pytest.approx(0.14959, abs=6e-6)
    many, _ = kernel_ridge_self_distillation(0.35, 40)
    assert many[-1] == pytest.approx(limit, abs=1e-5)  # converges to ~0.1496
