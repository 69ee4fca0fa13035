"""tokenizer_source union / tokenizer: blocks: the output tokenizer written, and every bad token source refused by --check.

The embedding rows themselves are compared with mergekit 0.1.5 in test_mergekit_compat.py (cases union_*,
tokenizer_*); here: what transfuse writes besides them, and the config mistakes caught before any work."""
import json

import pytest

from merge_helpers import load_mergekit_references, run_merge_text


mk = load_mergekit_references()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    mk.build_vocab_inputs(root)
    return root


def _run(root, monkeypatch, text, *args):
    return run_merge_text(root, monkeypatch, text, *args)


_HEAD = "models:\n  - model: tok_a\n  - model: tok_b\nmerge_method: linear\n"


def test_union_writes_the_union_tokenizer(root, monkeypatch, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    assert _run(root, monkeypatch, _HEAD + "tokenizer_source: union\nchat_template: chatml\n", str(out), "--no-copy-tokenizer") == 0
    tok = AutoTokenizer.from_pretrained(str(out))
    vocab = tok.get_vocab()
    assert len(vocab) == 131 and {"<tool>", "<think>", "<code>"} <= set(vocab)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 131
    assert tok.chat_template.startswith("{% for m in messages %}")
    assert tok.encode("w5 <code> w9", add_special_tokens=False) == [5, vocab["<code>"], 9]


@pytest.mark.parametrize("block,needle", [
    ("    <x>:\n      source: tok_c\n", "is not one of the merged models"),
    ("    <x>:\n      source: {kind: model_token, model: tok_a, token: nope}\n", "is not in 'tok_a'"),
    ("    <x>:\n      source: {kind: model_token, model: tok_a, token_id: 999}\n", "outside 'tok_a'"),
    ("    <code>:\n      source: tok_a\n", "does not have the token"),
])
def test_bad_token_sources_are_refused_by_check(root, monkeypatch, block, needle, capsys, tmp_path):
    text = _HEAD + "tokenizer:\n  source: union\n  tokens:\n" + block
    assert _run(root, monkeypatch, text, str(tmp_path / "out"), "--check") == 2
    assert needle in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_tokenizer_and_tokenizer_source_together_are_refused(root, monkeypatch, capsys, tmp_path):
    assert _run(root, monkeypatch, _HEAD + "tokenizer_source: union\ntokenizer: {source: union}\n", str(tmp_path / "o"), "--check") == 2
    assert "both tokenizer_source and tokenizer:" in capsys.readouterr().err


def test_rows_gathered_in_runs_for_a_reordered_vocabulary():
    """A model whose rows are in another order (and one that lacks a token): each output block holds
    exactly its rows, read in runs of nearby source rows, the default filling the missing one."""
    import numpy as np
    import torch

    from transfuse.merge.vocab import Vocabulary

    n = 2000
    i = np.arange(n)
    perm = np.where(i % 2 == 0, i // 2, n - 1 - i // 2)  # output row i is source row perm[i]: each block half from each end
    perm[7] = -1
    table = torch.randn(n, 3)

    class Tok:
        @staticmethod
        def get_vocab():
            return {f"t{i}": i for i in range(n)}

    other = np.arange(n)
    v = Vocabulary(Tok(), n, n, {"m": perm, "o": other}, {}, {}, {"m": n, "o": n}, np.zeros(n, dtype=bool))
    reads = []

    def read_rows(lo, hi):
        reads.append(hi - lo)
        return table[lo:hi]

    got = torch.cat([v.read("m", "emb", r0, min(r0 + 64, n), read_rows, lambda m, r: table[r] * 0 + 9.0, (3,), ("m", "o"), None)
                     for r0 in range(0, n, 64)])
    expect = table[torch.from_numpy(np.where(perm < 0, 0, perm))]
    expect[7] = 9.0  # only "o" has token t7: its row (here 9s) is the default
    assert torch.equal(got, expect)
    assert sum(reads) < 2 * n  # two runs per block, not a whole-vocabulary span per block (that would be ~30 n)
