"""Text data sets: raw texts with labels, tokenised later by the student's and the teacher's own tokenizers.

A text factory returns :class:`TextDataSplits` (texts, no token ids yet); the recipe calls
:func:`tokenize_splits` once the models exist, so each model reads ids from its own vocabulary.
A tokenised split is a :class:`TextTensors`: ``inputs`` are the student's ids (N, T) and a batch
also carries ``attention_mask`` (N, T) and, when the teacher's tokenizer differs, ``teacher_inputs``
(N, T_t) and ``teacher_attention_mask`` (N, T_t).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, fingerprint_tensors
from ._common import _generator, apply_labelled, check_labels, stratified_split

#: per-sample tensors a text batch carries besides inputs / labels / index
_EXTRA = ("attention_mask", "teacher_inputs", "teacher_attention_mask")


class TextTensors(IndexedTensors):
    """Texts with labels and ids; after tokenising, token ids (N, T) and their masks.

    texts: N strings; inputs: (N, T) int64 student ids (N, 0) before tokenising;
    extra: name -> (N, ...) tensors from ``_EXTRA`` that batches carry too.
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Tensor,
        index: Optional[Tensor] = None,
        inputs: Optional[Tensor] = None,
        extra: Optional[Dict[str, Tensor]] = None,
    ) -> None:
        ids = torch.zeros(len(texts), 0, dtype=torch.long) if inputs is None else inputs
        super().__init__(ids, labels, index)
        self.texts = list(texts)
        self.extra = dict(extra or {})

    @property
    def tokenised(self) -> bool:
        return self.inputs.shape[1] > 0

    @property
    def teacher_inputs(self) -> Optional[Tensor]:
        """The teacher's token ids (N, T_t) when its tokenizer differs from the student's, else None."""
        return self.extra.get("teacher_inputs")

    def _pick(self, idx: Tensor) -> Dict[str, Tensor]:
        return {"inputs": self.inputs[idx], "labels": self.labels[idx], "index": self.index[idx],
                **{k: v[idx] for k, v in self.extra.items()}}

    def __getitem__(self, i: int) -> Dict[str, Tensor]:
        return self._pick(torch.as_tensor(i))

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, Tensor]:
        return self._pick(torch.as_tensor(indices, dtype=torch.long))

    def subset(self, positions: Tensor) -> "TextTensors":
        positions = torch.as_tensor(positions, dtype=torch.long)
        return TextTensors(
            [self.texts[int(p)] for p in positions], self.labels[positions], self.index[positions],
            self.inputs[positions], {k: v[positions] for k, v in self.extra.items()},
        )

    def with_labels(self, labels: Tensor) -> "TextTensors":
        return TextTensors(self.texts, labels, self.index, self.inputs, self.extra)


@dataclass
class TextDataSplits(DataSplits):
    """DataSplits of texts; in_shape is (max_length,); ``tokenize`` gives the id tensors."""

    max_length: int = 128

    def tokenize(self, tokenizer: Any, teacher_tokenizer: Any = None) -> "TextDataSplits":
        return tokenize_splits(self, tokenizer, teacher_tokenizer)


def _vocab_key(tokenizer: Any) -> str:
    """What makes two tokenizers give the same ids: class, vocabulary and special tokens."""
    import hashlib

    pairs = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])  # token -> id, in id order
    digest = hashlib.sha256("\x00".join(f"{t}\x01{i}" for t, i in pairs).encode()).hexdigest()[:16]
    specials = (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    return f"{type(tokenizer).__name__}:{getattr(tokenizer, 'do_lower_case', None)}:{specials}:{digest}"


def _encode(tokenizer: Any, texts: List[str], max_length: int) -> Dict[str, Tensor]:
    if not callable(tokenizer):
        raise TransfuseError(f"a text data set needs a Hugging Face tokenizer; got a {type(tokenizer).__name__}")
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}  # (N, T) each


def _tokenise_split(split: TextTensors, tokenizer: Any, teacher_tokenizer: Any, max_length: int) -> TextTensors:
    enc = _encode(tokenizer, split.texts, max_length)
    extra = {"attention_mask": enc["attention_mask"]}
    if teacher_tokenizer is not None:
        t_enc = _encode(teacher_tokenizer, split.texts, max_length)
        extra.update(teacher_inputs=t_enc["input_ids"], teacher_attention_mask=t_enc["attention_mask"])
    return TextTensors(split.texts, split.labels, split.index, enc["input_ids"], extra)


def tokenize_splits(data: TextDataSplits, tokenizer: Any, teacher_tokenizer: Any = None) -> TextDataSplits:
    """Token ids for the student (``tokenizer``) and, when its vocabulary differs, for the teacher.

    Texts longer than ``data.max_length`` tokens are truncated; shorter ones padded with the
    tokenizer's pad token, masked out by ``attention_mask``.
    """
    if tokenizer is None:
        raise TransfuseError(
            f"data {data.name!r} is text, but the student has no tokenizer; use a text student "
            "(student.name=hf_text with path=<folder> or from_teacher=<folder>)"
        )
    if teacher_tokenizer is not None and _vocab_key(teacher_tokenizer) == _vocab_key(tokenizer):
        teacher_tokenizer = None  # same ids: the teacher reads the student's inputs
    train = _tokenise_split(data.train, tokenizer, teacher_tokenizer, data.max_length)
    test = None if data.test is None else _tokenise_split(data.test, tokenizer, teacher_tokenizer, data.max_length)
    key = _vocab_key(tokenizer) + ("" if teacher_tokenizer is None else "|" + _vocab_key(teacher_tokenizer))
    tensors = [train.inputs, train.labels, train.index] + [train.extra[k] for k in _EXTRA if k in train.extra]
    return replace(data, train=train, test=test, fingerprint=fingerprint_tensors(*tensors, extra=data.fingerprint + key))


def teacher_view(split: IndexedTensors) -> Tensor:
    """The inputs a teacher reads: its own token ids for text with a different tokenizer, else ``inputs``."""
    ids = getattr(split, "teacher_inputs", None)
    return split.inputs if ids is None else ids


def text_splits(
    name: str,
    texts: Sequence[str],
    labels: Sequence[int] | Tensor,
    *,
    class_names: Optional[List[str]] = None,
    test_texts: Optional[Sequence[str]] = None,
    test_labels: Optional[Sequence[int] | Tensor] = None,
    test_fraction: float = 0.0,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    max_length: int = 128,
    seed: int = 0,
    source: str = "",
) -> TextDataSplits:
    """Texts and class ids as splits: a seeded stratified test hold-out unless test texts are given,
    then ``labelled`` class-stratified labels kept (-1 on the rest, or the rest dropped)."""
    if len(texts) == 0:
        raise TransfuseError(f"{name} found no texts{' in ' + source if source else ''}")
    if max_length < 2:
        raise TransfuseError(f"max_length must be at least 2 tokens; got {max_length}")
    y = check_labels(torch.as_tensor(list(labels) if not isinstance(labels, Tensor) else labels), f"labels of {name}")
    if len(y) != len(texts):
        raise TransfuseError(f"{name} has {len(texts)} texts but {len(y)} labels")
    classes = len(class_names) if class_names else int(y.max()) + 1
    gen = _generator(seed)
    full = TextTensors(texts, y)
    if test_texts is not None:
        t_y = check_labels(torch.as_tensor(list(test_labels)), f"test labels of {name}", classes)
        train_pos, test = torch.arange(len(texts)), TextTensors(test_texts, t_y)
    else:
        train_pos, test_pos = stratified_split(y, test_fraction, gen)
        test = full.subset(test_pos) if len(test_pos) else None
    train = apply_labelled(full.subset(train_pos), labelled, unlabelled, gen)
    text_hash = fingerprint_tensors(torch.frombuffer(bytearray("\x00".join(texts).encode()), dtype=torch.uint8))
    extra = (
        f"{name} {source} texts={text_hash} test_fraction={test_fraction} labelled={labelled} "
        f"unlabelled={unlabelled} max_length={max_length} seed={seed}"
    )
    return TextDataSplits(
        name=name,
        train=train,
        test=test,
        num_classes=classes,
        in_shape=(max_length,),
        fingerprint=fingerprint_tensors(train.labels, train.index, extra=extra),
        class_names=class_names,
        max_length=max_length,
    )


def label_ids(names: Sequence[str]) -> tuple[list[int], list[str]]:
    """Class ids for label names, classes in sorted order (numbers sort as numbers)."""
    def key(v: str):
        return (0, float(v), v) if _is_number(v) else (1, 0.0, v)

    classes = sorted(set(names), key=key)
    ids = {c: i for i, c in enumerate(classes)}
    return [ids[n] for n in names], classes


def known_label_ids(names: Sequence[str], classes: List[str], where: str) -> list[int]:
    """Class ids of test label names; a name the training labels lack is an error naming it."""
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise TransfuseError(f"{where} has label {unknown[0]!r}, which no training sample has; fix the labels")
    return [classes.index(n) for n in names]


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def tokenize_for(data: DataSplits, student: Any, teacher: Any = None) -> DataSplits:
    """Text data tokenised by the student's and the teacher's own tokenizers; other data as it is."""
    from ..models.hf_text import tokenizer_of

    if not isinstance(data, TextDataSplits) or data.train.tokenised:
        return data
    return tokenize_splits(data, tokenizer_of(student), None if teacher is None else tokenizer_of(teacher))
