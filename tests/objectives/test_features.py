import pytest
import torch
from torch import nn

from transfuse.errors import TransfuseError
from transfuse.objectives._features import capture, forward_with_features, penultimate_width, teacher_model, tokens


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_capture_outputs_inputs_and_penultimate():
    m = _model()
    x = torch.randn(5, 1, 2, 2)
    out = forward_with_features(m, x, ["1", "3:in", "penultimate"])
    hidden = torch.relu(m[1](x.flatten(1)))
    assert torch.allclose(out.hidden["1"], m[1](x.flatten(1)))
    assert torch.allclose(out.hidden["3:in"], hidden)
    assert torch.allclose(out.hidden["penultimate"], hidden)
    assert torch.allclose(out.logits, m(x))
    assert not m[1]._forward_hooks and not m[3]._forward_hooks  # hooks are removed afterwards


def test_unknown_path_names_the_closest_module():
    with pytest.raises(TransfuseError, match="has no module 'l1'"):
        with capture(_model(), ["l1"]):
            pass


def test_helpers():
    assert penultimate_width(_model()) == 3
    holder = type("Source", (), {"model": _model()})()
    assert isinstance(teacher_model(holder), nn.Module) and teacher_model(None) is None
    assert tokens(torch.zeros(2, 5)).shape == (2, 1, 5)
    assert tokens(torch.zeros(2, 5, 3, 4)).shape == (2, 12, 5)


@pytest.mark.parametrize("name", ["sla", "trg", "talking", "kd3"])
def test_missing_features_say_what_to_do(name):
    from transfuse.objectives import build_objective
    from transfuse.signals import Batch, Outputs

    obj = build_objective(name, {"teacher_dim": 3} if name in ("trg", "kd3") else ({"student_dim": 3, "teacher_dim": 3} if name == "talking" else {}))
    batch = Batch(inputs=torch.zeros(2, 1, 2, 2), labels=torch.tensor([0, 1]), extra={"sla_rotations": 4})
    with pytest.raises(TransfuseError, match="forward_with_features"):
        obj(Outputs(logits=torch.zeros(8, 2)), Outputs(logits=torch.zeros(8, 2)), batch)
