"""text_bow: WordNet glosses / fortunes as hashed bag-of-words vectors."""
from pathlib import Path

import pytest
import torch

from transfuse.data import build_data
from transfuse.data.text_bow import wordnet_glosses
from transfuse.errors import TransfuseError

needs_wordnet = pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(), reason="apt wordnet-base not installed")


@needs_wordnet
def test_wordnet_categories_and_splits():
    glosses = wordnet_glosses()
    assert len(glosses) == 45 and "noun.animal" in glosses
    assert any("dog" in g for g in glosses["noun.animal"])
    d = build_data("text_bow", {"categories": ["noun.animal", "noun.food", "verb.motion"], "per_class": 50, "features": 256})
    assert d.num_classes == 3 and d.in_shape == (256,)
    assert len(d.train) + len(d.test) == 150 and len(d.test) == 30
    assert torch.allclose(d.train.inputs.norm(dim=1), torch.ones(len(d.train)), atol=1e-5)  # l2 rows
    assert set(d.train.index.tolist()).isdisjoint(d.test.index.tolist())
    again = build_data("text_bow", {"categories": ["noun.animal", "noun.food", "verb.motion"], "per_class": 50, "features": 256})
    assert d.fingerprint == again.fingerprint


@needs_wordnet
def test_unknown_category_is_an_error():
    with pytest.raises(TransfuseError, match="unknown categories"):
        build_data("text_bow", {"categories": ["noun.animals", "noun.food"]})
