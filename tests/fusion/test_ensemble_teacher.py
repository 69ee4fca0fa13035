"""Multi-teacher distillation through the fusion rules: the ensemble teacher source and the recipe key."""
import json

import pytest
import torch
import yaml
from torch import nn

from transfuse.errors import TransfuseError
from transfuse.signals import Batch
from transfuse.teachers import EnsembleModel, EnsembleTeacher, FrozenTeacher


def _mlp(seed, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, classes))


def _batch(n=7):
    return Batch(inputs=torch.randn(n, 12, generator=torch.Generator().manual_seed(3)))


def test_an_ensemble_of_one_teacher_with_an_identity_rule_is_that_teacher():
    model = _mlp(0)
    batch = _batch()
    expected = torch.log_softmax(model(batch.inputs), -1)
    for rule in ("mean", "logit_mean", "product", "max"):
        got = EnsembleTeacher([FrozenTeacher(model)], rule)(batch).logits
        assert torch.allclose(got, expected, atol=1e-5), rule


def test_two_teachers_with_mean_give_the_probability_average():
    a, b = _mlp(0), _mlp(1)
    batch = _batch()
    got = EnsembleTeacher([FrozenTeacher(a), FrozenTeacher(b)], "mean")(batch).logits.exp()
    want = (a(batch.inputs).softmax(-1) + b(batch.inputs).softmax(-1)) / 2
    assert torch.allclose(got, want.detach(), atol=1e-6)
    # weights 3:1
    got = EnsembleTeacher([FrozenTeacher(a), FrozenTeacher(b)], {"name": "mean"}, [3.0, 1.0])(batch).logits.exp()
    want = 0.75 * a(batch.inputs).softmax(-1) + 0.25 * b(batch.inputs).softmax(-1)
    assert torch.allclose(got, want.detach(), atol=1e-6)


def test_lm_shaped_outputs_are_fused_per_position():
    class Fixed:
        def __init__(self, logits):
            self.logits = logits

        def __call__(self, batch):
            from transfuse.signals import Outputs

            return Outputs(logits=self.logits)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 9, generator=g), torch.randn(2, 3, 9, generator=g)  # (B, T, V)
    got = EnsembleTeacher([Fixed(x), Fixed(y)], "mean")(_batch()).logits
    assert got.shape == (2, 3, 9)
    assert torch.allclose(got.exp(), (x.softmax(-1) + y.softmax(-1)) / 2, atol=1e-6)


def test_ensemble_model_matches_the_source_and_checks_weights():
    a, b = _mlp(0), _mlp(1)
    batch = _batch()
    model = EnsembleModel([a, b], "product", [1.0, 2.0])
    src = EnsembleTeacher([FrozenTeacher(a), FrozenTeacher(b)], "product", [1.0, 2.0])
    assert torch.allclose(model(batch.inputs).logits, src(batch).logits, atol=1e-6)
    with pytest.raises(TransfuseError, match="3 weights were given for 2 models"):
        EnsembleModel([a, b], "mean", [1.0, 2.0, 3.0])
    with pytest.raises(TransfuseError, match="non-negative"):
        EnsembleModel([a, b], "mean", [1.0, -1.0])
    with pytest.raises(TransfuseError, match="unknown fusion-rule 'meen'"):
        EnsembleTeacher([FrozenTeacher(a)], "meen")
    with pytest.raises(TransfuseError, match="different shapes"):
        EnsembleTeacher([FrozenTeacher(a), FrozenTeacher(_mlp(2, classes=4))], "mean")(batch)


def _recipe(tmp_path, teacher, **extra):
    cfg = {
        "student": {"name": "mlp", "params": {"hidden": [16]}},
        "teacher": teacher,
        "objective": {"name": "kd", "params": {"temperature": 2.0}},
        "data": {"name": "digits", "params": {"seed": 0}, "batch_size": 64},
        "train": {"epochs": 1, "seed": 0, "log_every": 5},
        "eval": {"latency": False, "each_epoch": False},
        "output": str(tmp_path / "out"),
        **extra,
    }
    path = tmp_path / "ens.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_recipe_with_an_ensemble_teacher_runs_end_to_end(tmp_path):
    from transfuse.recipes.distill import main

    members = [
        {"name": "mlp", "params": {"hidden": [32]}, "cache": True, "cache_dir": str(tmp_path / "cache")},
        {"name": "mlp", "params": {"hidden": [8]}, "cache": False},
    ]
    path = _recipe(tmp_path, {"ensemble": members, "rule": "mean", "weights": [2.0, 1.0]})
    metrics = main(path, [])
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "agreement" in metrics
    assert len(list((tmp_path / "cache").glob("teacher-*.safetensors"))) == 1  # the cached member's logits only
    report = json.loads((tmp_path / "out" / "report" / "metrics.json").read_text())
    assert report["rows"][0]["kl_to_teacher"] >= 0


def test_ensemble_recipe_errors_are_one_sentence(tmp_path):
    from transfuse.recipes.distill import main

    members = [{"name": "mlp", "params": {"hidden": [8]}}]
    with pytest.raises(TransfuseError, match="2 weights were given for 1 models"):
        main(_recipe(tmp_path, {"ensemble": members, "weights": [1.0, 2.0]}), [])
    with pytest.raises(TransfuseError, match="fusion weights"):
        main(_recipe(tmp_path, {"ensemble": members, "weights": "t.safetensors"}), [])
    with pytest.raises(TransfuseError, match="only an ensemble"):
        main(_recipe(tmp_path, {"name": "mlp", "weights": [1.0]}), [])
    assert not (tmp_path / "out").exists()


def test_public_names():
    import transfuse
    from transfuse.fusion.modes import cards, classifiers

    assert transfuse.fuse_classifiers is classifiers.run and transfuse.knowledge_cards is cards.run
    assert transfuse.EnsembleTeacher is EnsembleTeacher
