"""tokenizer_source union / tokenizer: blocks: the output tokenizer written, and every bad token source refused by --check.

The embedding rows themselves are compared with mergekit 0.1.5 in test_mergekit_compat.py (cases union_*,
tokenizer_*); here: what transfuse writes besides them, and the config mistakes caught before any work."""
import importlib.util
import json
from pathlib import Path

import pytest

from transfuse.cli import main as cli

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mergekit_references.py"
_spec = importlib.util.spec_from_file_location("mergekit_references", _SCRIPT)
mk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mk)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    mk.build_vocab_inputs(root)
    return root


def _run(root, monkeypatch, text, *args):
    monkeypatch.chdir(root)
    (root / "v.yaml").write_text(text)
    try:
        cli(["merge", "v.yaml", *args])
    except SystemExit as e:
        return e.code or 0
    return 0


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
