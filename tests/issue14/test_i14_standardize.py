"""Issue 14 item 3: tabular inputs are standardised per column by default (training split only), saved with the run."""
import numpy as np
import pytest
import torch

from transfuse.data import build_data
from transfuse.data.tensors import STATS_FILE, standardize_like_run
from transfuse.errors import TransfuseError
from transfuse.recipes.distill import main


def test_per_feature_by_default_from_the_training_split_only(tabular):
    path, _ = tabular
    d = build_data("tensors", {"path": str(path), "test_fraction": 0.25})
    x = torch.from_numpy(np.load(path)["x"])
    train_raw = x[d.train.index]
    assert torch.allclose(d.train.inputs.mean(0), torch.zeros(6), atol=1e-4)  # every column, not one pooled pair
    assert torch.allclose(d.train.inputs.std(0), torch.ones(6), atol=1e-4)
    mean, std = train_raw.mean(0), train_raw.std(0)
    assert torch.allclose(d.test.inputs, (x[d.test.index] - mean) / std, atol=1e-4)  # test scaled by train stats
    assert not torch.allclose(d.test.inputs.mean(0), torch.zeros(6), atol=1e-6)  # the test split's own stats are not used
    glob = build_data("tensors", {"path": str(path), "test_fraction": 0.25, "standardize": "global"})
    assert float(glob.train.inputs[:, 3].std()) > 10 * float(glob.train.inputs[:, 0].std())  # one pair: scales kept
    off = build_data("tensors", {"path": str(path), "test_fraction": 0.25, "standardize": "none"})
    assert torch.equal(off.train.inputs, train_raw) and off.input_stats is None


def test_conflicting_switches_and_bad_mode(tabular):
    path, _ = tabular
    with pytest.raises(TransfuseError, match="give one of them"):
        build_data("tensors", {"path": str(path), "normalise": False, "standardize": "per_feature"})
    with pytest.raises(TransfuseError, match="parameter 'standardize' must be one of"):
        build_data("tensors", {"path": str(path), "standardize": "columns"})


def test_stats_saved_with_the_run_and_applied_to_raw_inputs(tabular, tmp_path):
    path, recipe = tabular
    main(recipe(train__epochs=1), [])
    out = tmp_path / "out"
    assert (out / STATS_FILE).exists()
    d = build_data("tensors", {"path": str(path), "test_fraction": 0.25})
    raw = torch.from_numpy(np.load(path)["x"])[d.test.index]
    assert torch.allclose(standardize_like_run(raw, out), d.test.inputs, atol=1e-5)


def test_breast_cancer_teacher_learns_with_per_column_scaling(tmp_path):
    """The issue's trial: one pooled mean/std leaves the large columns dominant (0.889 vs 0.953)."""
    sklearn = pytest.importorskip("sklearn.datasets")
    import yaml

    x, y = sklearn.load_breast_cancer(return_X_y=True)
    np.savez(tmp_path / "bc.npz", x=x.astype(np.float32), y=y)
    accuracy = {}
    for how in ("per_feature", "global"):
        recipe = {
            "student": {"name": "mlp", "params": {"hidden": [32]}},
            "objective": {"name": "ce"},
            "data": {"name": "tensors", "params": {"path": str(tmp_path / "bc.npz"), "test_fraction": 0.3,
                                                   "standardize": how}, "batch_size": 32},
            "train": {"epochs": 20, "progress": False},
            "optim": {"lr": 3e-3},
            "eval": {"latency": False, "each_epoch": False},
            "output": str(tmp_path / how),
        }
        (tmp_path / f"{how}.yaml").write_text(yaml.safe_dump(recipe))
        accuracy[how] = main(tmp_path / f"{how}.yaml", [])["accuracy"]
    assert accuracy["per_feature"] >= 0.93, accuracy
    assert accuracy["per_feature"] > accuracy["global"], accuracy
