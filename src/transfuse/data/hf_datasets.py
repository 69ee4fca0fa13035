"""Hugging Face ``datasets``: a text classification data set loaded with ``datasets.load_dataset``
(a local folder or files, or a hub name when online), when the ``datasets`` package is installed.
"""
from __future__ import annotations

from typing import Optional

from ..errors import TransfuseError
from . import DataSplits, datasets
from ._text import known_label_ids, label_ids, text_splits


def _columns(ds, text_column: str, label_column: str, where: str):
    missing = [c for c in (text_column, label_column) if c not in ds.column_names]
    if missing:
        raise TransfuseError(
            f"{where} has columns {ds.column_names}, not {missing[0]!r}; set text_column=... and label_column=..."
        )
    return [str(t) for t in ds[text_column]], [str(v) for v in ds[label_column]]


@datasets.register("hf_datasets")
def hf_datasets(
    *,
    path: Optional[str] = None,
    name: Optional[str] = None,
    data_files: Optional[str] = None,
    split: str = "train",
    test_split: Optional[str] = "test",
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = 0.2,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    max_length: int = 128,
    seed: int = 0,
) -> DataSplits:
    """A text classification set through ``datasets.load_dataset(path, name, data_files=...)``.

    path: a builder ("csv", "json", "parquet") with data_files, a local dataset folder, or a hub
    name. split / test_split: the splits to read (test_split missing or None: a seeded stratified
    test_fraction). Class ids: the sorted distinct labels, as for text_table.
    """
    if path is None:
        raise TransfuseError("hf_datasets needs path=<a datasets builder, local folder or hub name>")
    try:
        import datasets as hf
    except ImportError:
        raise TransfuseError("hf_datasets needs the `datasets` package: pip install 'transfuse[text]'") from None
    try:
        loaded = hf.load_dataset(path, name, data_files=data_files)
    except Exception as exc:  # missing files, no network, unknown builder ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TransfuseError(f"could not load the data set {path!r}: {first}") from None
    if split not in loaded:
        raise TransfuseError(f"data set {path!r} has splits {sorted(loaded)}, not {split!r}; set split=...")
    texts, names = _columns(loaded[split], text_column, label_column, f"split {split!r} of {path!r}")
    ids, classes = label_ids(names)
    test_texts = test_ids = None
    has_test = test_split is not None and test_split in loaded
    if has_test:
        test_texts, test_names = _columns(loaded[test_split], text_column, label_column, f"split {test_split!r}")
        test_ids = known_label_ids(test_names, classes, f"split {test_split!r}")
    return text_splits(
        "hf_datasets", texts, ids, class_names=classes, test_texts=test_texts, test_labels=test_ids,
        test_fraction=0.0 if has_test else test_fraction, labelled=labelled, unlabelled=unlabelled,
        max_length=max_length, seed=seed, source=f"{path} {name} {data_files} {split} {test_split}",
    )
