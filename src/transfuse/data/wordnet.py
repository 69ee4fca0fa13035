"""WordNet glosses (Miller 1995): each synset's definition labelled with its lexical category
(field 2 of /usr/share/wordnet/data.{noun,verb,adj,adv}, one of 45 lexicographer files such as
noun.animal or verb.motion): a real 45-class text task. Debian package ``wordnet-base``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import torch

from ..errors import TransfuseError
from . import DataSplits, datasets
from ._common import _generator
from ._text import text_splits

ROOT = Path("/usr/share/wordnet")
POS = ("noun", "verb", "adj", "adv")
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()


def read_glosses(root: Path, pos: List[str]) -> tuple[list[str], list[int]]:
    """(gloss texts, lexicographer file ids 0..44) of every synset of the parts of speech ``pos``."""
    texts, lex = [], []
    for p in pos:
        file = root / f"data.{p}"
        if not file.is_file():
            raise TransfuseError(f"WordNet is not installed ({file} is missing); run `apt-get install wordnet-base`")
        for line in file.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:  # the licence header
                continue
            fields = line.split(" ", 2)
            gloss = line.split("|", 1)[1].strip()
            if gloss:
                texts.append(gloss)
                lex.append(int(fields[1]))
    return texts, lex


@datasets.register("wordnet")
def wordnet(
    *,
    pos: str = "noun,verb,adj,adv",
    categories: Optional[List[str]] = None,
    per_class: Optional[int] = None,
    test_fraction: float = 0.2,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    max_length: int = 64,
    seed: int = 0,
    root: str = str(ROOT),
) -> DataSplits:
    """WordNet glosses (Miller 1995) -> lexical category, from the installed wordnet-base files.

    pos: comma-separated parts of speech to read. categories: keep only these lexicographer
    files (e.g. [noun.animal, noun.plant]); classes are the categories present, in WordNet's order.
    per_class: at most this many glosses per category (a seeded random choice).
    labelled / unlabelled / test_fraction / max_length: as for text_table.
    """
    parts = [p.strip() for p in pos.split(",") if p.strip()]
    bad = [p for p in parts if p not in POS]
    if bad or not parts:
        raise TransfuseError(f"wordnet pos must be a comma-separated subset of {','.join(POS)}; got {pos!r}")
    if categories is not None:
        unknown = [c for c in categories if c not in LEXNAMES]
        if unknown:
            raise TransfuseError(f"wordnet has no category {unknown[0]!r}; categories are {', '.join(LEXNAMES)}")
    if per_class is not None and per_class < 1:
        raise TransfuseError(f"per_class must be a positive number of glosses; got {per_class}")
    texts, lex = read_glosses(Path(root), parts)
    wanted = set(range(len(LEXNAMES))) if categories is None else {LEXNAMES.index(c) for c in categories}
    present = sorted(set(lex) & wanted)
    if not present:
        raise TransfuseError(f"no WordNet gloss of pos={pos!r} is in categories {categories}")
    new_id = {c: i for i, c in enumerate(present)}
    keep = [i for i, c in enumerate(lex) if c in new_id]
    if per_class is not None:
        gen = _generator(seed)
        chosen = []
        for c in present:
            members = [i for i in keep if lex[i] == c]
            order = torch.randperm(len(members), generator=gen)[:per_class].tolist()
            chosen += [members[j] for j in order]
        keep = sorted(chosen)
    return text_splits(
        "wordnet", [texts[i] for i in keep], [new_id[lex[i]] for i in keep],
        class_names=[LEXNAMES[c] for c in present], test_fraction=test_fraction, labelled=labelled,
        unlabelled=unlabelled, max_length=max_length, seed=seed,
        source=f"{root} pos={parts} categories={categories} per_class={per_class}",
    )
