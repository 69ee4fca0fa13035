import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from transfuse.data import build_data
from transfuse.data import fashion_mnist as fm
from transfuse.errors import TransfuseError

INSTALLED = fm._files_in(Path(fm.DEBIAN_DIR)) is not None
needs_data = pytest.mark.skipif(not INSTALLED, reason="apt-get install -y dataset-fashion-mnist")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_folder(folder: Path, n_train: int = 30, n_test: int = 10) -> tuple:
    rng = np.random.default_rng(0)
    tx = rng.integers(0, 256, (n_train, 28, 28))
    ty = np.arange(n_train) % 10
    _write_idx(folder / "train-images-idx3-ubyte.gz", tx)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", ty)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)
    return tx, ty


@needs_data
def test_real_files_small_slice():
    d = build_data("fashion_mnist", {"train_size": 2000, "test_size": 500})
    assert d.train.inputs.shape == (2000, 1, 28, 28) and d.train.inputs.dtype == torch.float32
    assert d.test.inputs.shape == (500, 1, 28, 28)
    assert d.train.labels.dtype == torch.int64 and set(d.train.labels.tolist()) <= set(range(10))
    assert torch.equal(d.train.index, torch.arange(2000))
    assert d.num_classes == 10 and d.in_shape == (1, 28, 28) and len(d.class_names) == 10
    # Independent parse of the first image and label: raw bytes after the 16- and 8-byte headers.
    with gzip.open(Path(fm.DEBIAN_DIR) / "train-images-idx3-ubyte.gz", "rb") as f:
        first = np.frombuffer(f.read(16 + 784), dtype=np.uint8)[16:].reshape(28, 28)
    with gzip.open(Path(fm.DEBIAN_DIR) / "train-labels-idx1-ubyte.gz", "rb") as f:
        first_label = f.read(9)[8]
    back = (d.train.inputs[0, 0] * fm.STD + fm.MEAN) * 255
    assert torch.allclose(back, torch.from_numpy(first.astype(np.float32)), atol=1e-3)
    assert int(d.train.labels[0]) == first_label
    # Normalised with Fashion-MNIST's statistics: roughly zero mean, unit std on a 2,000 slice.
    assert abs(float(d.train.inputs.mean())) < 0.05 and abs(float(d.train.inputs.std()) - 1) < 0.05


@needs_data
def test_parsed_once_per_process_and_labelled_subset():
    build_data("fashion_mnist", {"train_size": 100, "test_size": 10})
    before = fm._load_arrays.cache_info()
    d = build_data("fashion_mnist", {"train_size": 1000, "test_size": 10, "labelled": 100, "seed": 3})
    after = fm._load_arrays.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1
    kept = d.train.labels >= 0
    assert len(d.train) == 1000 and int(kept.sum()) == 100
    assert torch.bincount(d.train.labels[kept], minlength=10).min() >= 8  # stratified: ~10 per class
    only = build_data("fashion_mnist", {"train_size": 1000, "test_size": 10, "labelled": 100, "seed": 3, "unlabelled": False})
    assert len(only.train) == 100 and torch.equal(only.train.index, d.train.index[kept])
    other = build_data("fashion_mnist", {"train_size": 1000, "test_size": 10, "labelled": 100, "seed": 4})
    assert other.fingerprint != d.fingerprint
    again = build_data("fashion_mnist", {"train_size": 1000, "test_size": 10, "labelled": 100, "seed": 3})
    assert again.fingerprint == d.fingerprint


def test_root_folder(tmp_path):
    tx, ty = _fake_folder(tmp_path)
    d = build_data("fashion_mnist", {"root": str(tmp_path)})
    assert len(d.train) == 30 and len(d.test) == 10
    back = ((d.train.inputs[:, 0] * fm.STD + fm.MEAN) * 255).round()
    assert torch.equal(back.long(), torch.from_numpy(tx).long())
    assert d.train.labels.tolist() == ty.tolist()


def test_root_missing_files(tmp_path):
    _fake_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(TransfuseError, match="lacks t10k-labels-idx1-ubyte"):
        build_data("fashion_mnist", {"root": str(tmp_path)})
    with pytest.raises(TransfuseError, match="is not a folder"):
        build_data("fashion_mnist", {"root": str(tmp_path / "nope")})


def test_truncated_file(tmp_path):
    _fake_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-50]))
    with pytest.raises(TransfuseError, match="truncated"):
        build_data("fashion_mnist", {"root": str(tmp_path)})


def test_not_installed_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path))
    monkeypatch.setattr(fm, "_torchvision_download", lambda: None)
    with pytest.raises(TransfuseError, match="apt-get install -y dataset-fashion-mnist"):
        build_data("fashion_mnist")


def test_bad_sizes(tmp_path):
    _fake_folder(tmp_path)
    with pytest.raises(TransfuseError, match="positive"):
        build_data("fashion_mnist", {"root": str(tmp_path), "train_size": 0})
    with pytest.raises(TransfuseError, match="labelled must be between 1 and the 30"):
        build_data("fashion_mnist", {"root": str(tmp_path), "labelled": 31})
