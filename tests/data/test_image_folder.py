from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transfuse.data import build_data
from transfuse.errors import TransfuseError


def _make(folder: Path, classes=("cat", "dog"), per_class=5, size=(6, 6), value=None) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if value is None else np.full((size[1], size[0], 3), value, np.uint8)
            Image.fromarray(a).save(folder / c / f"{i}.png")


def test_layout_and_normalisation(tmp_path):
    _make(tmp_path)
    d = build_data("image_folder", {"root": str(tmp_path), "test_fraction": 0.2})
    assert d.class_names == ["cat", "dog"] and d.num_classes == 2 and d.in_shape == (3, 6, 6)
    assert len(d.train) == 8 and len(d.test) == 2
    assert torch.bincount(d.test.labels).tolist() == [1, 1]
    per_channel = d.train.inputs.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-5)
    # Independently: read every file in sorted order, normalise with the training split's channel stats.
    files = [p for c in ("cat", "dog") for p in sorted((tmp_path / c).iterdir())]
    raw = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1).float() / 255 for p in files])
    train_raw = raw[d.train.index]
    mean = train_raw.mean(dim=(0, 2, 3), keepdim=True)
    std = train_raw.std(dim=(0, 2, 3), keepdim=True)
    assert torch.allclose(d.train.inputs, (train_raw - mean) / std, atol=1e-5)
    assert torch.allclose(d.test.inputs, (raw[d.test.index] - mean) / std, atol=1e-5)
    assert torch.equal(d.train.labels, d.train.index // 5)


def test_grayscale_resize_and_presplit(tmp_path):
    _make(tmp_path / "train", size=(6, 6))
    _make(tmp_path / "test", per_class=2, size=(6, 6))
    d = build_data("image_folder", {"root": str(tmp_path), "grayscale": True, "size": 4})
    assert d.in_shape == (1, 4, 4) and len(d.train) == 10 and len(d.test) == 4
    assert d.test.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(d.train.index, torch.arange(10))


def test_no_test_split(tmp_path):
    _make(tmp_path)
    assert build_data("image_folder", {"root": str(tmp_path), "test_fraction": 0.0}).test is None


def test_errors(tmp_path):
    with pytest.raises(TransfuseError, match="does not exist"):
        build_data("image_folder", {"root": str(tmp_path / "missing")})
    with pytest.raises(TransfuseError, match="needs root"):
        build_data("image_folder")
    with pytest.raises(TransfuseError, match="no class sub-folders"):
        build_data("image_folder", {"root": str(tmp_path)})
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(TransfuseError, match="has no images"):
        build_data("image_folder", {"root": str(tmp_path)})


def test_sizes_differ(tmp_path):
    _make(tmp_path, classes=("a",), size=(6, 6))
    _make(tmp_path, classes=("b",), size=(7, 5))
    with pytest.raises(TransfuseError, match="images differ in size.*pass size=N"):
        build_data("image_folder", {"root": str(tmp_path)})
    assert build_data("image_folder", {"root": str(tmp_path), "size": 5}).in_shape == (3, 5, 5)


def test_unreadable_image(tmp_path):
    _make(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(TransfuseError, match="could not read image .*broken.png"):
        build_data("image_folder", {"root": str(tmp_path)})


def test_test_class_missing_from_train(tmp_path):
    _make(tmp_path / "train")
    _make(tmp_path / "test", classes=("cat", "dog", "eel"), per_class=1)
    with pytest.raises(TransfuseError, match="classes the training folder lacks: eel"):
        build_data("image_folder", {"root": str(tmp_path)})
