"""Fixtures for the fused-LM tests: tiny random Llamas sharing the LM tests' word-level tokenizer."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lm_helpers import make_llama, make_tokenizer  # noqa: E402


def sharp_llama(seed: int, *, vocab: int = 40, layers: int = 2):
    """A tiny Llama whose output layer is scaled up, so its next-token argmax has no near-ties."""
    model = make_llama(vocab=vocab, layers=layers, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model


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
