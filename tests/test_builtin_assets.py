"""Builtin weights: the shipped file is used; when absent, the recipe trains it once (the asset module only loads)."""
import pytest
from safetensors.torch import load_file

import transfuse.assets as assets
from transfuse.errors import TransfuseError


def test_shipped_teacher_loads_into_its_model():
    from transfuse.models import build_model

    path = assets.builtin_weights("fashion_mnist_cnn")
    model = build_model("cnn", {}, in_shape=(1, 28, 28), num_classes=10)
    model.load_state_dict(load_file(path))


def test_absent_weights_are_trained_once_by_the_recipe(tmp_path, monkeypatch):
    from transfuse.recipes.builtin_teacher import ensure_builtin

    monkeypatch.setattr(assets, "HERE", tmp_path / "package")  # nothing shipped
    monkeypatch.setenv("TRANSFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(assets.BUILTIN, "tiny_digits_mlp", {
        "model": "mlp", "model_params": {"hidden": [8]}, "data": "digits", "data_params": {},
        "epochs": 1, "lr": 1e-2, "batch_size": 64, "seed": 0,
    })
    with pytest.raises(TransfuseError, match="python -m transfuse.recipes.builtin_teacher tiny_digits_mlp"):
        assets.builtin_weights("tiny_digits_mlp")  # loading alone never trains
    path = ensure_builtin("tiny_digits_mlp")
    assert path == tmp_path / "cache" / "assets" / "tiny_digits_mlp.safetensors"
    assert path.exists() and path.with_suffix(".json").exists()
    mtime = path.stat().st_mtime_ns
    assert ensure_builtin("tiny_digits_mlp").stat().st_mtime_ns == mtime  # not retrained
    assert assets.builtin_weights("tiny_digits_mlp") == path  # now the asset module finds it
    assert not list(path.parent.glob(".*tmp*"))


def test_unknown_builtin_suggests():
    with pytest.raises(TransfuseError, match="Did you mean: fashion_mnist_cnn"):
        assets.builtin_weights("fashion_mnist_cn")


def test_asset_module_does_not_reach_into_the_recipes():
    """No import of the recipes or the loop anywhere in the asset module, not even inside a function."""
    import ast

    tree = ast.parse(open(assets.__file__).read())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m.split(".")[0] in ("recipes", "distill", "models", "data", "objectives")}, imported
