"""Tensors: the user's arrays from a ``.npz`` file (keys x, y and optionally x_test, y_test) or a
``.pt`` file holding a dict of tensors with the same keys (read with ``torch.load(weights_only=True)``).

Inputs stored as uint8 are scaled to [0, 1]; floating inputs are cast to float32; both are then
standardised with the training split's mean and std (``standardize``: ``per_feature``, the
default, as scikit-learn's StandardScaler: one pair per column of a table (N, F), per channel
of images (N, C, H, W); ``global``: one pair; ``none``). Columns on very different scales
(a table's features) need their own pair, or the largest drowns the others. The statistics are
kept on the splits (``input_stats``) so a run saves them and predicts on raw inputs the same way.
Integer inputs other than uint8 (token ids) are kept as int64 and never standardised. Labels are class ids 0..C-1; ``num_classes`` defaults to
the largest label + 1. Sample ids are positions in ``x``.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Literal, Optional

import numpy as np
import torch

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, datasets, fingerprint_tensors
from ._common import _generator, apply_labelled, check_labels, describe_stats, feature_stats, stratified_split

_KEYS = ("x", "y", "x_test", "y_test")

#: the file a distill run writes its data set's input standardisation to (mean, std tensors)
STATS_FILE = "input_stats.safetensors"


def standardize_like_run(inputs: torch.Tensor, run_folder: str | Path) -> torch.Tensor:
    """Raw inputs (N, ...) scaled as the run's training data was (uint8 -> [0, 1], then (x - mean) / std
    with the statistics saved in ``run_folder``), for predicting with its student; unchanged without them."""
    from safetensors.torch import load_file

    x = _inputs(torch.as_tensor(inputs))
    stats_path = Path(run_folder).expanduser() / STATS_FILE
    if not stats_path.exists() or not x.is_floating_point():
        return x
    stats = load_file(str(stats_path))
    return (x - stats["mean"]) / stats["std"]


def _read_npz(path: Path) -> Dict[str, Any]:
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and blame object arrays
        raise TransfuseError(f"{path} is not a .npz file (numpy.savez writes a zip archive; this is not one); save it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise TransfuseError(
                f"{path} holds an object array (samples of different shapes?); store x as one numeric array (N, ...) "
                "with every sample the same shape"
            ) from None
        raise TransfuseError(f"could not read {path} as .npz ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise TransfuseError(f"could not read {path} as .npz ({exc}); save it with numpy.savez") from None


def _read_pt(path: Path) -> Dict[str, Any]:
    hint = "save a dict of tensors with torch.save({'x': ..., 'y': ...})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise TransfuseError(f"could not read {path} as a .pt file (damaged or not saved by torch.save); {hint}") from None
        raise TransfuseError(f"{path} holds Python objects other than tensors, which transfuse will not unpickle; {hint}") from None
    except Exception as exc:  # a damaged or foreign file fails in many ways
        raise TransfuseError(f"could not read {path} as a .pt file ({type(exc).__name__}); {hint}") from None
    if not isinstance(obj, dict):
        raise TransfuseError(f"{path} holds a {type(obj).__name__}; save a dict of tensors with keys x and y (optionally x_test, y_test)")
    return obj


def _as_tensor(value: Any, key: str, path: Path) -> torch.Tensor:
    """A stored array as a tensor; a list of per-sample tensors is stacked when all share a shape."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TransfuseError(f"{key} in {path} has dtype {value.dtype}; store numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        shapes = sorted({tuple(v.shape) for v in value})
        if len(shapes) > 1:
            raise TransfuseError(
                f"samples of {key} in {path} differ in shape ({shapes[0]} vs {shapes[1]}); give every sample the same shape"
            )
        return torch.stack(list(value))
    raise TransfuseError(f"{key} in {path} is a {type(value).__name__}; store a tensor (N, ...)")


def _check_no_gaps(y: torch.Tensor, file: Path) -> None:
    """With num_classes unset the class count is the largest label + 1, so one stray label (7 among
    0..2) would silently widen it; ids that skip classes are refused, naming the stray labels."""
    values, counts = torch.unique(y, return_counts=True)
    if len(values) == 0 or int(values[-1]) + 1 == len(values):
        return
    present = set(values.tolist())
    missing = [c for c in range(int(values[-1]) + 1) if c not in present]
    first_gap = missing[0]
    stray = [(int(v), int(n)) for v, n in zip(values, counts) if int(v) > first_gap]
    shown = ", ".join(f"{v} ({n} sample{'s' if n != 1 else ''})" for v, n in stray[:5])
    raise TransfuseError(
        f"y in {file} skips class ids {missing[:5]}{'...' if len(missing) > 5 else ''} but has label {shown}; "
        f"fix the stray label{'s' if len(stray) > 1 else ''}, or set data.params.num_classes if those classes exist"
    )


def _inputs(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if x.is_floating_point():
        return x.float()
    return x.long()


@datasets.register("tensors")
def tensors(
    *,
    path: Optional[str] = None,
    num_classes: Optional[int] = None,
    normalise: bool = True,
    standardize: Optional[Literal["per_feature", "global", "none"]] = None,
    test_fraction: float = 0.0,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    seed: int = 0,
) -> DataSplits:
    """Your tensors from a .npz or .pt file with keys x, y and optionally x_test, y_test.

    standardize: per_feature (default) | global | none, with statistics from the training split only;
    normalise=false is the older spelling of standardize=none.
    test_fraction: a seeded stratified hold-out when the file has no x_test (0: no test split).
    labelled / unlabelled: as for fashion_mnist.
    """
    if standardize is not None and not normalise and standardize != "none":
        raise TransfuseError(f"tensors got normalise=false and standardize={standardize}; give one of them (standardize=none turns it off)")
    how = standardize or ("per_feature" if normalise else "none")
    if path is None:
        raise TransfuseError("tensors needs path=<file.npz or file.pt with keys x and y>")
    file = Path(path).expanduser()
    if file.is_dir():
        raise TransfuseError(f"tensor path {str(file)!r} is a folder; pass path=<file.npz or file.pt with keys x and y>")
    if not file.is_file():
        raise TransfuseError(f"tensor file {str(file)!r} does not exist")
    if file.suffix == ".npz":
        stored = _read_npz(file)
    elif file.suffix in (".pt", ".pth"):
        stored = _read_pt(file)
    else:
        raise TransfuseError(f"tensor file {file.name!r} must end in .npz or .pt")
    keys = sorted(map(str, stored))
    if "x" not in stored or "y" not in stored or ("x_test" in stored) != ("y_test" in stored) or set(keys) - set(_KEYS):
        raise TransfuseError(
            f"{file} has keys {', '.join(keys) or 'none'}; expected x and y, optionally x_test and y_test together"
        )
    x = _as_tensor(stored["x"], "x", file)
    if x.ndim < 2:
        raise TransfuseError(f"x in {file} has shape {tuple(x.shape)}; expected (N, ...) with one row per sample")
    if x.is_complex() or x.dtype == torch.bool:
        raise TransfuseError(f"x in {file} has dtype {x.dtype}; store real numbers")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise TransfuseError(f"x in {file} contains NaN or infinite values; clean the data first")
    y = check_labels(_as_tensor(stored["y"], "y", file), f"y in {file}", num_classes)
    if len(x) != len(y):
        raise TransfuseError(f"{file} has {len(x)} samples in x but {len(y)} labels in y; give one label per sample")
    if len(x) == 0:
        raise TransfuseError(f"{file} has no samples")
    if num_classes is None:
        _check_no_gaps(y, file)
    classes = num_classes if num_classes is not None else int(y.max()) + 1
    gen = _generator(seed)
    x_test = y_test = None
    if "x_test" in stored:
        x_test = _as_tensor(stored["x_test"], "x_test", file)
        y_test = check_labels(_as_tensor(stored["y_test"], "y_test", file), f"y_test in {file}", classes)
        if tuple(x_test.shape[1:]) != tuple(x.shape[1:]):
            raise TransfuseError(
                f"x_test samples have shape {tuple(x_test.shape[1:])} but x samples {tuple(x.shape[1:])} in {file}; "
                "give them the same shape"
            )
        if len(x_test) != len(y_test):
            raise TransfuseError(f"{file} has {len(x_test)} samples in x_test but {len(y_test)} labels in y_test")
        train_pos = torch.arange(len(x))
    else:
        train_pos, test_pos = stratified_split(y, test_fraction, gen)
    inputs = _inputs(x)
    mean = std = None
    if how != "none" and inputs.is_floating_point():
        mean, std = feature_stats(inputs[train_pos], how)
        inputs = (inputs - mean) / std
    full = IndexedTensors(inputs, y)
    train = apply_labelled(full.subset(train_pos), labelled, unlabelled, gen)
    if x_test is not None:
        t_inputs = _inputs(x_test)
        if mean is not None:
            t_inputs = (t_inputs - mean) / std
        test: Optional[IndexedTensors] = IndexedTensors(t_inputs, y_test)
    else:
        test = full.subset(test_pos) if len(test_pos) else None
    norm = f"{how} {describe_stats(mean, std)}" if mean is not None else "none"
    extra = (
        f"tensors {file.resolve()} dtype={x.dtype} normalise={norm} test_fraction={test_fraction} "
        f"labelled={labelled} unlabelled={unlabelled} seed={seed}"
    )
    return DataSplits(
        name="tensors",
        train=train,
        test=test,
        num_classes=classes,
        in_shape=tuple(x.shape[1:]),
        fingerprint=fingerprint_tensors(train.inputs, train.labels, train.index, extra=extra),
        input_stats=None if mean is None else {"mean": mean, "std": std},
    )
