"""Small tabular runs for the issue-14 tests: a .npz of two well separated classes and a recipe for it."""
import numpy as np
import pytest
import yaml


@pytest.fixture
def tabular(tmp_path):
    """(npz path, write_recipe(**changes) -> recipe path); 160 samples, 6 features on very different scales."""
    rng = np.random.default_rng(0)
    y = np.arange(160) % 2
    x = rng.normal(0, 1, (160, 6)) + y[:, None] * 1.5
    x = (x * np.array([1, 10, 100, 1000, 0.1, 0.01])).astype(np.float32)
    path = tmp_path / "tab.npz"
    np.savez(path, x=x, y=y)

    def write_recipe(name="r.yaml", **changes):
        recipe = {
            "student": {"name": "mlp", "params": {"hidden": [16]}},
            "teacher": {"name": "mlp", "params": {"hidden": [32]}, "cache": False},
            "objective": {"name": "kd"},
            "data": {"name": "tensors", "params": {"path": str(path), "test_fraction": 0.25}, "batch_size": 32},
            "train": {"epochs": 2, "progress": False},
            "eval": {"latency": False},
            "output": str(tmp_path / "out"),
        }
        for key, value in changes.items():
            node = recipe
            parts = key.split("__")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        file = tmp_path / name
        file.write_text(yaml.safe_dump(recipe))
        return file

    return path, write_recipe
