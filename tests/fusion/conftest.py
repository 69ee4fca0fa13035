"""Fixtures for the fused-LM tests (helpers in fusion_helpers.py)."""
from __future__ import annotations

import pytest
import torch

from fusion_helpers import make_tokenizer, sharp_llama


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def lms():
    """Three different tiny Llamas over the tokenizer's 40-token vocabulary."""
    return [sharp_llama(seed) for seed in (1, 2, 3)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~50x faster than two spinning ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
