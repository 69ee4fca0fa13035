"""Text table: the user's texts and labels from a .csv / .tsv (a header row naming the columns) or a
.jsonl file (one JSON object per line), optionally a second file as the test split.

Labels may be class names or integers; classes are the sorted distinct labels (numbers sort as
numbers). Tokenised later by the student's (and teacher's) own tokenizer (see ``_text``).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import TransfuseError
from . import DataSplits, datasets
from ._text import known_label_ids, label_ids, text_splits


def _read(path: str, text_column: str, label_column: str, what: str) -> Tuple[List[str], List[str]]:
    file = Path(path).expanduser()
    if file.is_dir():
        raise TransfuseError(f"{what} {str(file)!r} is a folder; pass a .csv, .tsv or .jsonl file (or use text_folder)")
    if not file.is_file():
        raise TransfuseError(f"{what} {str(file)!r} does not exist")
    if file.suffix not in (".csv", ".tsv", ".jsonl"):
        raise TransfuseError(f"{what} {file.name!r} must end in .csv, .tsv or .jsonl")
    try:
        raw = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TransfuseError(f"{what} {str(file)!r} is not UTF-8 text; save it as UTF-8") from None
    rows = []
    if file.suffix == ".jsonl":
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TransfuseError(f"line {n} of {file} is not JSON ({exc.msg}); write one JSON object per line") from None
            if not isinstance(row, dict):
                raise TransfuseError(f"line {n} of {file} is not a JSON object; write one object per line")
            rows.append((n, row))
    else:
        reader = csv.DictReader(raw.splitlines(), delimiter="\t" if file.suffix == ".tsv" else ",")
        rows = [(n + 2, row) for n, row in enumerate(reader)]
    texts, labels = [], []
    for n, row in rows:
        if text_column not in row or label_column not in row:
            raise TransfuseError(
                f"row {n} of {file} has columns {sorted(row)}; name the text and label columns with "
                f"text_column=... and label_column=... (now {text_column!r}, {label_column!r})"
            )
        text, label = row[text_column], row[label_column]
        if not isinstance(text, str) or label is None or str(label).strip() == "":
            raise TransfuseError(f"row {n} of {file} has no text or no label; every row needs both")
        texts.append(text)
        labels.append(str(label).strip())
    return texts, labels


@datasets.register("text_table")
def text_table(
    *,
    path: Optional[str] = None,
    test_path: Optional[str] = None,
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = 0.2,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    max_length: int = 128,
    seed: int = 0,
) -> DataSplits:
    """Your texts from a .csv / .tsv / .jsonl file with a text and a label column.

    test_path: a file of the same kind as the test split (else a seeded stratified test_fraction).
    labelled / unlabelled: keep labels on a class-stratified subset, -1 (or dropped) elsewhere.
    max_length: tokens per text after tokenising (longer texts are truncated).
    """
    if path is None:
        raise TransfuseError("text_table needs path=<file.csv, .tsv or .jsonl with text and label columns>")
    texts, names = _read(path, text_column, label_column, "text file")
    test_texts = test_names = None
    if test_path is not None:
        test_texts, test_names = _read(test_path, text_column, label_column, "test file")
    ids, classes = label_ids(names)
    test_ids = None
    if test_names is not None:
        test_ids = known_label_ids(test_names, classes, "the test file")
    return text_splits(
        "text_table", texts, ids, class_names=classes, test_texts=test_texts, test_labels=test_ids,
        test_fraction=test_fraction if test_path is None else 0.0, labelled=labelled, unlabelled=unlabelled,
        max_length=max_length, seed=seed, source=f"{Path(path).resolve()} {test_path} {text_column} {label_column}",
    )
