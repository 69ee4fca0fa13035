"""Text folder: one sub-folder per class holding .txt files, one text per file (``root/<class>/*.txt``),
like ``image_folder``; optionally ``root/train`` and ``root/test`` each laid out that way.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import TransfuseError
from . import DataSplits, datasets
from ._text import text_splits


def _scan(root: Path, classes: Optional[List[str]] = None) -> Tuple[List[str], List[int], List[str]]:
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = found if classes is None else classes
    if not classes:
        raise TransfuseError(f"{str(root)!r} has no class folders; lay the texts out as {root}/<class>/<file>.txt")
    extra = sorted(set(found) - set(classes))
    if extra:
        raise TransfuseError(f"{str(root)!r} has the class folder {extra[0]!r}, which the training folder lacks")
    texts, labels = [], []
    for c, name in enumerate(classes):
        for file in sorted((root / name).glob("*.txt")) if (root / name).is_dir() else []:
            try:
                text = file.read_text(encoding="utf-8").strip()
            except UnicodeDecodeError:
                raise TransfuseError(f"{str(file)!r} is not UTF-8 text; save it as UTF-8") from None
            if text:
                texts.append(text)
                labels.append(c)
    return texts, labels, classes


@datasets.register("text_folder")
def text_folder(
    *,
    root: Optional[str] = None,
    test_fraction: float = 0.2,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    max_length: int = 128,
    seed: int = 0,
) -> DataSplits:
    """Your texts as root/<class>/<name>.txt (or root/train/<class>/... and root/test/<class>/...).

    test_fraction: a seeded stratified test split when there is no root/test folder.
    labelled / unlabelled / max_length: as for text_table.
    """
    if root is None:
        raise TransfuseError("text_folder needs root=<folder with one sub-folder of .txt files per class>")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise TransfuseError(f"text folder {str(folder)!r} does not exist or is not a folder")
    split = (folder / "train").is_dir() and (folder / "test").is_dir()
    texts, labels, classes = _scan(folder / "train" if split else folder)
    test_texts = test_labels = None
    if split:
        test_texts, test_labels, _ = _scan(folder / "test", classes)
    return text_splits(
        "text_folder", texts, labels, class_names=classes, test_texts=test_texts, test_labels=test_labels,
        test_fraction=0.0 if split else test_fraction, labelled=labelled, unlabelled=unlabelled,
        max_length=max_length, seed=seed, source=str(folder.resolve()),
    )
