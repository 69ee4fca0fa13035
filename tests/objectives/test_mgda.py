"""combined with weighting: mgda (multiple-gradient descent weights per step)."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import transfuse
from transfuse.objectives import build_objective
from transfuse.objectives._mgda import min_norm_weights
from transfuse.signals import Batch, Outputs


def _gram(*grads):
    g = torch.stack([torch.tensor(x, dtype=torch.float32) for x in grads])
    return g @ g.t()


def test_min_norm_of_two_orthogonal_gradients():
    # |w1 e1 + w2 (2 e2)|^2 = w1^2 + 4 w2^2 on w1 + w2 = 1: minimum at w = (0.8, 0.2)
    assert torch.allclose(min_norm_weights(_gram([1.0, 0.0], [0.0, 2.0])), torch.tensor([0.8, 0.2]), atol=1e-5)


def test_opposed_gradients_cancel_and_a_dominated_one_takes_all_the_weight():
    assert torch.allclose(min_norm_weights(_gram([1.0, 1.0], [-1.0, -1.0])), torch.tensor([0.5, 0.5]), atol=1e-5)
    # g2 lies inside the hull's min-norm direction: the min-norm point is g2 alone
    assert torch.allclose(min_norm_weights(_gram([3.0, 1.0], [0.0, 1.0])), torch.tensor([0.0, 1.0]), atol=1e-5)


def test_three_gradients_against_a_grid_search():
    g = torch.tensor([[1.0, 0.2, 0.0], [0.1, 1.5, 0.3], [-0.4, 0.1, 2.0]])
    w = min_norm_weights(g @ g.t(), iterations=500)
    best = min(
        float(((a * g[0] + b * g[1] + (1 - a - b) * g[2]) ** 2).sum())
        for a in torch.linspace(0, 1, 101) for b in torch.linspace(0, 1, 101) if a + b <= 1 + 1e-9
    )
    assert abs(float((w @ g).pow(2).sum()) - best) < 1e-3 and abs(float(w.sum()) - 1) < 1e-5 and (w >= 0).all()


def test_mgda_weights_are_the_min_norm_mix_of_the_terms_gradients():
    torch.manual_seed(0)
    student = torch.nn.Linear(5, 3)
    obj = build_objective("combined", {"weighting": "mgda", "terms": [{"name": "ce"}, {"name": "kd", "params": {"alpha": 1.0}}]})
    obj.bind(student)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    batch = Batch(inputs=x, labels=y)
    teacher = Outputs(logits=torch.randn(16, 3) * 3)
    loss = obj(Outputs(logits=student(x)), teacher, batch)
    loss.backward()
    grads = []
    for term in obj.terms:
        student.zero_grad()
        term(Outputs(logits=student(x)), teacher, batch).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in student.parameters()]))
    g = torch.stack(grads)
    assert torch.allclose(obj.mgda_weights, min_norm_weights(g @ g.t()), atol=1e-5)


def test_mgda_runs_through_the_loop_and_keeps_its_weights_in_the_state():
    torch.manual_seed(0)
    x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
    teacher = torch.nn.Linear(8, 3)
    student = torch.nn.Linear(8, 3)
    obj = build_objective("combined", {"weighting": "mgda", "terms": [{"name": "ce"}, {"name": "kd"}]})
    result = transfuse.distill(student, teacher, obj, DataLoader(TensorDataset(x, y), batch_size=32), epochs=2, progress=False)
    assert result.steps == 8
    w = obj.state_dict()["mgda_weights"]
    assert abs(float(w.sum()) - 1) < 1e-5 and not torch.allclose(w, torch.tensor([0.5, 0.5]))


def test_bad_weighting_is_refused():
    with pytest.raises(Exception, match="fixed' or 'mgda"):
        build_objective("combined", {"weighting": "pareto", "terms": [{"name": "ce"}]})
