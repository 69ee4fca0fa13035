"""`transfuse.distill(...)` and `transfuse.merge(...)` stay callable after their subpackages are imported."""
import importlib

import torch
from torch.utils.data import DataLoader, TensorDataset

import transfuse


def test_distill_is_callable_before_and_after_submodule_imports():
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    first = transfuse.distill(torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), "kd", loader, progress=False)
    importlib.import_module("transfuse.distill.loop")  # this used to shadow the function with the package

    second = transfuse.distill(torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), "kd", loader, progress=False)
    assert first.steps == second.steps == 2


def test_merge_is_callable():
    importlib.import_module("transfuse.merge.engine")

    assert callable(transfuse.merge) and callable(transfuse.merge.merge)


def _digits_loaders():
    from transfuse.data import build_data

    data = build_data("digits", {"seed": 0})
    train = DataLoader(TensorDataset(data.train.inputs, data.train.labels), batch_size=64, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    test = DataLoader(TensorDataset(data.test.inputs, data.test.labels), batch_size=256)
    return data, train, test


def test_distill_returns_the_evaluation_metrics_of_the_last_epoch():
    from transfuse.eval.evaluate import evaluate

    data, train, test = _digits_loaders()
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    result = transfuse.distill(student, None, "ce", train, epochs=2, lr=1e-2, eval_loader=test, progress=False)
    measured = evaluate(result.student, data.test)
    assert set(result.metrics) == {"accuracy", "ece", "nll"}
    assert abs(result.metrics["accuracy"] - measured["accuracy"]) < 1e-9 and result.metrics["accuracy"] > 0.5
    assert result.history[-1]["accuracy"] == result.metrics["accuracy"]
    assert transfuse.distill(student, None, "ce", train, progress=False).metrics == {}


def test_a_teacher_objective_without_a_teacher_is_one_sentence():
    import pytest

    _, train, _ = _digits_loaders()
    with pytest.raises(transfuse.TransfuseError, match="objective 'kd' needs a teacher"):
        transfuse.distill(torch.nn.Linear(64, 10), None, "kd", train, progress=False)


def test_hugging_face_dict_batches_reach_both_models_with_their_mask():
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(20, 4)
            self.head = torch.nn.Linear(4, 3)

        def forward(self, input_ids, attention_mask=None):
            seen.append((input_ids.shape, None if attention_mask is None else attention_mask.clone()))
            m = attention_mask.unsqueeze(-1).float()
            return self.head((self.emb(input_ids) * m).sum(1) / m.sum(1))

    ids = torch.randint(1, 20, (8, 5))
    mask = torch.ones(8, 5, dtype=torch.long)
    mask[:, 3:] = 0
    items = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": torch.tensor(i % 3)} for i in range(8)]
    result = transfuse.distill(Recorder(), Recorder(), "kd", DataLoader(items, batch_size=4), progress=False)
    assert result.steps == 2 and len(seen) >= 4
    assert all(m is not None and m[:, 3:].sum() == 0 and m[:, :3].all() for _, m in seen)


def test_the_python_default_schedule_is_the_recipes_default():
    import inspect

    from transfuse.recipes.distill import DistillConfig

    from transfuse.distill.api import distill

    default = inspect.signature(distill).parameters["schedule"].default
    assert default == DistillConfig.model_fields["optim"].default_factory().schedule
