"""Fortunes: the quotations of the ``fortune`` program, labelled by their file (category): files
under /usr/share/games/fortunes, items split by a line holding only "%". Debian packages
``fortunes-min`` (3 categories) or ``fortunes`` (about 40).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from ..errors import TransfuseError
from . import DataSplits, datasets
from ._text import text_splits

ROOT = Path("/usr/share/games/fortunes")


def read_fortunes(root: Path, categories: Optional[List[str]]) -> tuple[list[str], list[int], list[str]]:
    """(texts, category ids, category names) of the fortune files in ``root`` (sorted by name)."""
    if not root.is_dir():
        raise TransfuseError(f"fortunes are not installed ({root} is missing); run `apt-get install fortunes-min`")
    found = sorted(p.name for p in root.iterdir() if p.is_file() and not p.suffix and not p.name.startswith("."))
    names = found if categories is None else list(categories)
    missing = sorted(set(names) - set(found))
    if missing:
        raise TransfuseError(f"no fortune category {missing[0]!r} in {root}; installed: {', '.join(found)}")
    texts, labels = [], []
    for c, name in enumerate(names):
        raw = (root / name).read_text(encoding="utf-8", errors="replace")
        for item in raw.replace("\r\n", "\n").split("\n%\n"):
            item = item.strip().strip("%").strip()
            if item:
                texts.append(item)
                labels.append(c)
    return texts, labels, names


@datasets.register("fortunes")
def fortunes(
    *,
    categories: Optional[List[str]] = None,
    test_fraction: float = 0.2,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    max_length: int = 128,
    seed: int = 0,
    root: str = str(ROOT),
) -> DataSplits:
    """Fortune quotations -> their category (file name), from the installed fortunes packages.

    categories: the files to read (default all); labelled / unlabelled / test_fraction / max_length:
    as for text_table.
    """
    texts, labels, names = read_fortunes(Path(root), categories)
    return text_splits(
        "fortunes", texts, labels, class_names=names, test_fraction=test_fraction, labelled=labelled,
        unlabelled=unlabelled, max_length=max_length, seed=seed, source=f"{root} {names}",
    )
