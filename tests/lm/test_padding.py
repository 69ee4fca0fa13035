"""Dynamic padding (issue 15): a batch is cut to its longest row, and training on cut batches gives the
weights of training on rows padded to seq_len."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from transfuse.lm.data import TokenDataset, TrimmedBatches

from lm_helpers import make_llama, make_tokenizer


def test_batches_are_cut_to_their_longest_row():
    attn = torch.zeros(3, 10, dtype=torch.long)
    attn[0, :4], attn[1, :6], attn[2, :2] = 1, 1, 1
    data = TokenDataset(torch.arange(30).view(3, 10), torch.full((3, 10), -100), attn.bool(), attn)
    rows = TrimmedBatches(data)
    assert rows.__getitems__([0, 2])["inputs"].shape == (2, 4)
    assert rows.__getitems__([0, 1, 2])["attention_mask"].shape == (3, 6)
    assert torch.equal(rows.__getitems__([1])["inputs"][0], torch.arange(10, 16))


def test_longest_and_max_length_padding_train_the_same_weights(tmp_path):
    from transfuse.recipes.distill_lm import LMConfig, main

    make_llama(layers=3, seed=1).save_pretrained(tmp_path / "teacher")
    make_tokenizer().save_pretrained(tmp_path / "teacher")
    rows = [{"messages": [{"role": "user", "content": " ".join(f"w{(i + j) % 32}" for j in range(1 + i % 4))},
                          {"role": "assistant", "content": " ".join(f"w{(3 * i + j) % 32}" for j in range(2 + i % 5))}]}
            for i in range(12)]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    weights, losses = {}, {}
    for padding in ("longest", "max_length"):
        cfg = LMConfig.model_validate({
            "teacher": {"path": str(tmp_path / "teacher"), "cache_dir": str(tmp_path / f"cache-{padding}"), "top_k": 8},
            "student": {"layers": 2}, "objective": {"name": "forward_kl"},
            "data": {"source": str(tmp_path / "chat.jsonl"), "seq_len": 48, "batch_size": 4, "padding": padding},
            "train": {"max_steps": 3, "lr": 0.01}, "eval": {"samples": 2, "new_tokens": 2},
            "output": str(tmp_path / padding),
        })
        losses[padding] = main(cfg)["final_train_loss"]
        weights[padding] = load_file(tmp_path / padding / "model.safetensors")
    a, b = weights["longest"], weights["max_length"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4  # float noise of other matmul shapes, through Adam
    assert losses["longest"] == pytest.approx(losses["max_length"], rel=1e-4)
