"""Builtin weights: the shipped file is used; when absent, the model is trained on the spot once."""
import pytest
from safetensors.torch import load_file

import transfuse.assets as assets
from transfuse.errors import TransfuseError


def test_shipped_teacher_loads_into_its_model():
    from transfuse.models import build_model

    path = assets.builtin_weights("fashion_mnist_cnn")
    model = build_model("cnn", {}, in_shape=(1, 28, 28), num_classes=10)
    model.load_state_dict(load_file(path))


def test_absent_weights_are_trained_once(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "HERE", tmp_path / "package")  # nothing shipped
    monkeypatch.setenv("TRANSFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(assets.BUILTIN, "tiny_digits_mlp", {
        "model": "mlp", "model_params": {"hidden": [8]}, "data": "digits", "data_params": {},
        "epochs": 1, "lr": 1e-2, "batch_size": 64, "seed": 0,
    })
    path = assets.builtin_weights("tiny_digits_mlp")
    assert path == tmp_path / "cache" / "assets" / "tiny_digits_mlp.safetensors"
    assert path.exists() and path.with_suffix(".json").exists()
    mtime = path.stat().st_mtime_ns
    assert assets.builtin_weights("tiny_digits_mlp").stat().st_mtime_ns == mtime  # not retrained
    assert not list(path.parent.glob(".*tmp*"))


def test_unknown_builtin_suggests():
    with pytest.raises(TransfuseError, match="Did you mean: fashion_mnist_cnn"):
        assets.builtin_weights("fashion_mnist_cn")
