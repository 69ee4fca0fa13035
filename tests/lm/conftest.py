"""Fixtures for the LM tests (helpers in lm_helpers.py)."""
from __future__ import annotations

import pytest

from lm_helpers import make_llama, make_tokenizer


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def tiny_lm_folder(tmp_path):
    """A saved tiny teacher (4 layers) + tokenizer: what a user's model folder looks like."""
    model = make_llama(layers=4, seed=1)
    folder = tmp_path / "teacher"
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder
