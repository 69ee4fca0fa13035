import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from transfuse.data import IndexedTensors, collate_batch
from transfuse.errors import TransfuseError
from transfuse.eval import agreement, evaluate, evaluate_model, expected_calibration_error, kl_to_teacher


class Passthrough(nn.Module):
    """Returns its inputs as logits (times a parameter equal to 1, so it has a device and a size)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.scale


def _data(n=23, c=4):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    return IndexedTensors(logits, labels)


def test_metrics_match_the_functions():
    data = _data()
    teacher = torch.randn(23, 4, generator=torch.Generator().manual_seed(1))
    model = Passthrough().train()
    out = evaluate(model, data, teacher_logits=teacher, batch_size=5, latency=True)
    assert model.training
    assert torch.allclose(out["logits"], data.inputs)
    assert out["accuracy"] == pytest.approx(float((data.inputs.argmax(-1) == data.labels).float().mean()))
    assert out["ece"] == pytest.approx(expected_calibration_error(torch.softmax(data.inputs, -1), data.labels))
    assert out["nll"] == pytest.approx(float(nn.functional.cross_entropy(data.inputs, data.labels)), abs=1e-6)
    assert out["agreement"] == pytest.approx(agreement(data.inputs, teacher))
    assert out["kl_to_teacher"] == pytest.approx(kl_to_teacher(data.inputs, teacher))
    assert out["parameters"] == 1 and out["latency_ms_per_1000"] > 0
    assert evaluate_model is evaluate


def test_loader_and_hf_style_outputs():
    data = _data()

    class HFStyle(Passthrough):
        def forward(self, x):
            return type("Out", (), {"logits": x * self.scale})()

    loader = DataLoader(data, batch_size=6, shuffle=False, collate_fn=collate_batch)
    out = evaluate(HFStyle(), loader)
    assert torch.allclose(out["logits"], data.inputs) and torch.equal(out["labels"], data.labels)


def test_mismatches_are_clear_errors():
    data = _data()
    with pytest.raises(TransfuseError, match="teacher gives 5 classes but the student 4"):
        evaluate(Passthrough(), data, teacher_logits=torch.zeros(23, 5))
    with pytest.raises(TransfuseError, match="teacher_logits has 22 rows but the data has 23"):
        evaluate(Passthrough(), data, teacher_logits=torch.zeros(22, 4))
    bad = IndexedTensors(torch.zeros(2, 4), torch.tensor([0, 6]))
    with pytest.raises(TransfuseError, match="class id 6 but the model gives 4 classes"):
        evaluate(Passthrough(), bad)
    with pytest.raises(TransfuseError, match="empty"):
        evaluate(Passthrough(), IndexedTensors(torch.zeros(0, 4), torch.zeros(0)))
