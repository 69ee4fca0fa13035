"""Loading, the student built from teacher layers, the vocabulary check, text data and masks."""
from __future__ import annotations

import json

import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.lm.data import load_records, split_records, tokenize_records
from transfuse.lm.models import CausalLM, check_vocab, load_causal_lm, spread_layers, student_from_teacher

from lm_helpers import WORDS, make_llama, make_tokenizer


def test_load_from_folder_and_missing_folder(tiny_lm_folder, tmp_path):
    model, tok = load_causal_lm(str(tiny_lm_folder))
    assert model.config.num_hidden_layers == 4 and len(tok) == len(WORDS)
    with pytest.raises(TransfuseError, match="does not exist"):
        load_causal_lm(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TransfuseError, match="could not load"):
        load_causal_lm(str(tmp_path / "empty"))


def test_student_copies_chosen_layers():
    teacher = make_llama(layers=5, seed=3)
    assert spread_layers(5, 3) == [0, 2, 4]
    student = student_from_teacher(teacher, 3)
    assert student.config.num_hidden_layers == 3
    for si, ti in enumerate([0, 2, 4]):
        assert torch.equal(student.model.layers[si].mlp.up_proj.weight, teacher.model.layers[ti].mlp.up_proj.weight)
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    with pytest.raises(TransfuseError, match="between 1 and 5"):
        student_from_teacher(teacher, 9)


def test_vocab_mismatch_names_both_sizes_and_tokenizers():
    tok = make_tokenizer()
    a, b = make_llama(vocab=40), make_llama(vocab=48)
    with pytest.raises(TransfuseError, match=r"40 rows .* 48"):
        check_vocab(a, b, tok, tok)
    assert check_vocab(a, b, tok, tok, allow_padding_rows=True) == 40  # the 8 extra rows are padding
    other = make_tokenizer(WORDS[:-1] + ["zzz"])
    with pytest.raises(TransfuseError, match="tokenizer .* differs"):
        check_vocab(a, make_llama(vocab=40), tok, other)
    small = make_llama(vocab=36)
    with pytest.raises(TransfuseError, match="not padding"):
        check_vocab(small, a, tok, tok, allow_padding_rows=True)  # 40 tokens do not fit in 36 rows


def test_adapter_hidden_and_logits_agree():
    m = make_llama()
    ids = torch.randint(0, 40, (2, 5))
    h = CausalLM(m, hidden=True)(ids).hidden["last"]
    assert torch.allclose(CausalLM(m)(ids).logits, m.lm_head(h), atol=1e-5)


def test_plain_text_is_packed_with_next_token_labels(tokenizer, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("w1 w2 w3\n\nw4 w5")
    data = tokenize_records(load_records(str(f)), tokenizer, seq_len=4)
    stream = [tokenizer.convert_tokens_to_ids(w) for w in "w1 w2 w3 </s> w4 w5 </s>".split()]
    assert data.inputs[0].tolist() == stream[:4]
    assert data.labels[0, :3].tolist() == stream[1:4] and data.labels[0, 3] == -100
    assert data.mask[0].tolist() == [True, True, True, False]


def test_chat_counts_only_response_tokens(tokenizer, tmp_path):
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "w1 w2"}, {"role": "assistant", "content": "w3 w4"}]}) + "\n"
                 + json.dumps({"prompt": "w5", "response": "w6"}) + "\n")
    data = tokenize_records(load_records(str(f)), tokenizer, seq_len=24)
    targets = [tokenizer.convert_ids_to_tokens(data.labels[0][data.mask[0]].tolist())]
    assert targets[0] == ["w3", "w4", "</s>"]
    assert tokenizer.convert_ids_to_tokens(data.labels[1][data.mask[1]].tolist()) == ["w6", "</s>"]
    assert bool((data.labels[~data.mask] == -100).all())


def test_bad_records_and_sources_are_clear_errors(tmp_path, tokenizer):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"foo": 1}\n')
    with pytest.raises(TransfuseError, match="needs 'text', 'messages'"):
        load_records(str(f))
    f.write_text("not json\n")
    with pytest.raises(TransfuseError, match="not valid JSON"):
        load_records(str(f))
    with pytest.raises(TransfuseError, match="neither a file"):
        load_records("no_such_corpus")


def test_embedded_corpus_and_split():
    records = load_records("pydoc")
    train, held = split_records(records, held_out=0.1)
    assert len(records) > 50 and len(held) >= 5 and not set(map(id, train)) & set(map(id, held))
