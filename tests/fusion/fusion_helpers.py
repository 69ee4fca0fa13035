"""Tiny random Llamas for the fused-LM tests, sharing the LM tests' word-level tokenizer (lm_helpers.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lm_helpers import make_llama, make_tokenizer  # noqa: E402,F401


def sharp_llama(seed: int, *, vocab: int = 40, layers: int = 2):
    """A tiny Llama whose output layer is scaled up, so its next-token argmax has no near-ties."""
    model = make_llama(vocab=vocab, layers=layers, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model
