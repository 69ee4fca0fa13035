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

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
# WordNet's lexicographer files in the order of their numbers 00..44 (WordNet 3.0, lexnames(5WN))
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()


def wordnet_glosses(root: Path = WORDNET) -> Dict[str, List[str]]:
    """Category name -> the glosses of its synsets (text after ``|``), read from the data.* files."""
    files = [root / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    if not all(f.exists() for f in files):
        raise TransfuseError(f"WordNet's data files are not in {root}; install them with `apt-get install wordnet-base`")
    out: Dict[str, List[str]] = {}
    for f in files:
        for line in f.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # the licence header
            fields = line.split(" ", 2)
            out.setdefault(LEXNAMES[int(fields[1])], []).append(line.split("|", 1)[1].strip())
    return out


def fortunes(root: Path = FORTUNES) -> Dict[str, List[str]]:
    """Topic (file name) -> its fortunes."""
    topics = sorted(p for p in root.glob("*") if p.is_file() and p.suffix == "") if root.is_dir() else []
    if not topics:
        raise TransfuseError(f"no fortune files in {root}; install them with `apt-get install fortunes-min` (or `fortunes`)")
    return {p.name: [t.strip() for t in p.read_text(encoding="utf-8", errors="replace").split("\n%\n") if t.strip()]
            for p in topics}


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
