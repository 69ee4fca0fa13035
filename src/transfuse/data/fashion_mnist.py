"""Fashion-MNIST (Xiao et al. 2017): 60,000 + 10,000 grey 28x28 images of 10 clothing classes.

Read from the Debian package's files (``apt-get install -y dataset-fashion-mnist``), from a
``root`` folder holding the same four idx files (gzipped or not), or from torchvision's
download when torchvision is installed and the machine is online. Pixels are scaled to [0, 1]
and normalised with the usual mean 0.2860 and std 0.3530.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, datasets, fingerprint_tensors
from ._common import _generator, apply_labelled

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"
MEAN, STD = 0.2860, 0.3530
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _find(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _files_in(folder: Path) -> Optional[dict]:
    found = {key: _find(folder, stem) for key, stem in _FILES.items()}
    return found if all(found.values()) else None


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format, optionally gzipped) as a uint8 array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise TransfuseError(f"could not read {path} ({exc}); the file is damaged, reinstall it with `{INSTALL_HINT}`") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise TransfuseError(f"{path} is not an idx file of unsigned bytes; reinstall it with `{INSTALL_HINT}`")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise TransfuseError(
            f"{path} is truncated: its header promises shape {shape} but it holds {len(raw) - header} bytes of data; "
            f"reinstall it with `{INSTALL_HINT}`"
        )
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)


@lru_cache(maxsize=4)
def _load_arrays(folder: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parsed (train_x (60000, 28, 28), train_y (60000,), test_x, test_y) uint8, once per process."""
    files = _files_in(Path(folder))
    assert files is not None
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise TransfuseError(
                f"Fashion-MNIST {split} files in {folder} disagree: images {x.shape}, labels {y.shape}; "
                f"reinstall them with `{INSTALL_HINT}`"
            )
        if len(y) and int(y.max()) >= len(CLASS_NAMES):
            raise TransfuseError(f"Fashion-MNIST {split} labels in {folder} go up to {int(y.max())}; expected 0..9")
    return arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]


def _torchvision_download() -> Optional[Path]:
    """Folder of the raw files after torchvision's download, or None when that is not possible."""
    try:
        from torchvision.datasets import FashionMNIST  # type: ignore[import-not-found]
    except ImportError:
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transfuse" / "torchvision"
    try:
        FashionMNIST(root=str(cache), train=True, download=True)
        FashionMNIST(root=str(cache), train=False, download=True)
    except Exception:  # offline, proxy, disk: all mean "not available"
        return None
    return cache / "FashionMNIST" / "raw"


def _locate(root: Optional[str]) -> Path:
    if root is not None:
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise TransfuseError(f"Fashion-MNIST root {str(folder)!r} is not a folder; pass the folder holding the idx files")
        if _files_in(folder) is None:
            missing = [stem for stem in _FILES.values() if _find(folder, stem) is None]
            raise TransfuseError(
                f"Fashion-MNIST root {str(folder)!r} lacks {', '.join(missing)} (.gz or not); "
                f"install the data with `{INSTALL_HINT}` or point root at a folder that has them"
            )
        return folder
    if _files_in(Path(DEBIAN_DIR)) is not None:
        return Path(DEBIAN_DIR)
    downloaded = _torchvision_download()
    if downloaded is not None and _files_in(downloaded) is not None:
        return downloaded
    raise TransfuseError(
        f"Fashion-MNIST is not installed (no files in {DEBIAN_DIR}); install it with `{INSTALL_HINT}` "
        "or pass root=<folder with the idx files>"
    )


def _split(x: np.ndarray, y: np.ndarray) -> Tuple[torch.Tensor, IndexedTensors]:
    raw = torch.from_numpy(x)  # (N, 28, 28) uint8, shares the cached array's memory
    inputs = raw.float().mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD).unsqueeze(1)  # (N, 1, 28, 28): (x/255 - mean)/std
    return raw, IndexedTensors(inputs, torch.from_numpy(y.astype(np.int64)))


@datasets.register("fashion_mnist")
def fashion_mnist(
    *,
    root: Optional[str] = None,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    train_size: Optional[int] = None,
    test_size: Optional[int] = None,
    seed: int = 0,
) -> DataSplits:
    """Fashion-MNIST (Xiao et al. 2017), 10 classes of 1x28x28 clothing images; the Debian package's files.

    labelled: keep labels for a class-stratified random subset of this many training samples
    (chosen by ``seed``) and give the rest label -1; unlabelled=False drops those unlabelled samples.
    train_size / test_size: keep only the first N samples (small runs, CI).
    """
    folder = _locate(root)
    train_x, train_y, test_x, test_y = _load_arrays(str(folder))
    n_train = len(train_x) if train_size is None else train_size
    n_test = len(test_x) if test_size is None else test_size
    if n_train <= 0 or n_test <= 0:
        raise TransfuseError(f"train_size and test_size must be positive; got {train_size} and {test_size}")
    raw_train, train = _split(train_x[:n_train], train_y[:n_train])
    _, test = _split(test_x[:n_test], test_y[:n_test])
    train = apply_labelled(train, labelled, unlabelled, _generator(seed))
    extra = f"fashion_mnist x/255 then (x-{MEAN})/{STD}; labelled={labelled} unlabelled={unlabelled} seed={seed}"
    fingerprint = fingerprint_tensors(raw_train[train.index], train.labels, train.index, extra=extra)
    return DataSplits(
        name="fashion_mnist",
        train=train,
        test=test,
        num_classes=10,
        in_shape=(1, 28, 28),
        fingerprint=fingerprint,
        class_names=list(CLASS_NAMES),
    )
