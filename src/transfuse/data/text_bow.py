"""Text as fixed-length vectors: WordNet glosses by lexical category, or fortunes by topic, hashed into
bag-of-words counts, for models that take tensors (continual streams, MLP students).

The hashing is scikit-learn's ``HashingVectorizer`` (unigrams and bigrams, no sign flipping, l2
rows), so no vocabulary is fitted and the train and test splits are vectorised the same way.
For the tokenised text path (an HF encoder and its tokenizer) use the text data sets instead.
Sources (RESOURCES.md): ``wordnet`` = /usr/share/wordnet/data.{noun,verb,adj,adv} (apt
wordnet-base), field 2 the lexical file (45 categories); ``fortunes`` = /usr/share/games/fortunes
(apt fortunes / fortunes-min), one topic per file, items split by a line holding ``%``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, datasets, fingerprint_tensors
from ._common import _generator, stratified_split
from .fortunes import ROOT as FORTUNES_ROOT, read_fortunes
from .wordnet import LEXNAMES, POS, ROOT as WORDNET_ROOT, read_glosses


def wordnet_glosses(root: Path = WORDNET_ROOT) -> Dict[str, List[str]]:
    """Category name -> the glosses of its synsets (read by the wordnet data set's reader)."""
    texts, lex = read_glosses(root, list(POS))
    out: Dict[str, List[str]] = {}
    for text, k in zip(texts, lex):
        out.setdefault(LEXNAMES[k], []).append(text)
    return out


def fortunes(root: Path = FORTUNES_ROOT) -> Dict[str, List[str]]:
    """Topic (file name) -> its fortunes (read by the fortunes data set's reader)."""
    texts, labels, names = read_fortunes(root, None)
    out: Dict[str, List[str]] = {name: [] for name in names}
    for text, c in zip(texts, labels):
        out[names[c]].append(text)
    return out


def _pick(texts: Dict[str, List[str]], categories: Optional[Sequence[str]], min_per_class: int) -> List[str]:
    if categories:
        unknown = [c for c in categories if c not in texts]
        if unknown:
            raise TransfuseError(f"unknown categories {unknown}; this source has {sorted(texts)}")
        return list(categories)
    return sorted(c for c, items in texts.items() if len(items) >= min_per_class)


@datasets.register("text_bow")
def text_bow(
    *,
    source: str = "wordnet",
    categories: Optional[List[str]] = None,
    per_class: int = 400,
    features: int = 2048,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DataSplits:
    """WordNet glosses (45 lexical categories) or fortunes (topics) as hashed bag-of-words vectors (features,).

    categories: which classes (default: every one with at least per_class items); per_class: a seeded
    random subset of each class's texts; features: the hashing width.
    """
    from sklearn.feature_extraction.text import HashingVectorizer

    if source not in ("wordnet", "fortunes"):
        raise TransfuseError(f"text_bow source must be wordnet or fortunes; got {source!r}")
    if per_class < 2 or features < 2 or not 0.0 < test_fraction < 1.0:
        raise TransfuseError(
            f"text_bow needs per_class >= 2, features >= 2 and 0 < test_fraction < 1; got {per_class}, {features}, {test_fraction}"
        )
    texts = wordnet_glosses() if source == "wordnet" else fortunes()
    names = _pick(texts, categories, per_class)
    if len(names) < 2:
        raise TransfuseError(f"text_bow needs at least two classes with {per_class} texts each; lower per_class")
    gen = _generator(seed)
    docs: List[str] = []
    labels: List[int] = []
    for c, name in enumerate(names):
        items = texts[name]
        take = torch.randperm(len(items), generator=gen)[:per_class].sort().values.tolist()
        docs += [items[i] for i in take]
        labels += [c] * len(take)
    vec = HashingVectorizer(n_features=features, ngram_range=(1, 2), alternate_sign=False, norm="l2")
    x = torch.from_numpy(vec.transform(docs).toarray()).float()  # (N, features)
    y = torch.tensor(labels, dtype=torch.long)
    train_pos, test_pos = stratified_split(y, test_fraction, gen)
    full = IndexedTensors(x, y)
    train = full.subset(train_pos)
    extra = f"text_bow {source} {names} per_class={per_class} features={features} test_fraction={test_fraction} seed={seed}"
    return DataSplits(name="text_bow", train=train, test=full.subset(test_pos), num_classes=len(names),
                      in_shape=(features,), fingerprint=fingerprint_tensors(train.inputs, train.labels, extra=extra),
                      class_names=names)
