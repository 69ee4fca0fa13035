"""Issue 15's tracebacks, now one clear sentence or working: padding rows on either side, ShareGPT turns,
an objective that cannot use a top-k cache (lssd), a bad chunk_mode, seq_len beyond the model's positions;
teacher_nll prompts are a chat record's turns before its response."""
from __future__ import annotations

import json

import pytest
import torch

from transfuse.errors import TransfuseError

from lm_helpers import WORDS, make_llama, make_tokenizer


def _folder(path, *, vocab=len(WORDS), layers=2, seed=1):
    make_llama(vocab=vocab, layers=layers, seed=seed).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def _chat(path, n=8, sharegpt=False):
    rows = []
    for i in range(n):
        q, a = " ".join(f"w{(i + j) % 32}" for j in range(3)), " ".join(f"w{(2 * i + j) % 32}" for j in range(4))
        if sharegpt:
            rows.append({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
        else:
            rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _cfg(tmp_path, **sections):
    from transfuse.recipes.distill_lm import LMConfig

    base = {
        "teacher": {"path": str(tmp_path / "teacher"), "cache": True, "cache_dir": str(tmp_path / "cache"), "top_k": 8},
        "student": {"layers": 2},
        "data": {"source": str(_chat(tmp_path / "chat.jsonl")), "seq_len": 24, "batch_size": 2},
        "train": {"max_steps": 1},
        "eval": {"samples": 2, "new_tokens": 2},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return LMConfig.model_validate(base)


@pytest.mark.parametrize("larger", ["student", "teacher"])
@pytest.mark.parametrize("cache,chunked", [(True, False), (False, False), (True, True), (False, True)])
def test_allow_padding_rows_either_side(tmp_path, larger, cache, chunked):
    from transfuse.recipes.distill_lm import main

    _folder(tmp_path / "teacher", vocab=48 if larger == "teacher" else len(WORDS))
    _folder(tmp_path / "student", vocab=48 if larger == "student" else len(WORDS), seed=2)
    cfg = _cfg(tmp_path, teacher={"cache": cache}, student={"path": str(tmp_path / "student")},
               objective={"chunked": chunked, "chunk_size": 5})
    with pytest.raises(TransfuseError, match="allow_padding_rows=true"):
        main(cfg)
    metrics = main(cfg.model_copy(update={"allow_padding_rows": True}))
    assert metrics["steps"] == 1 and torch.isfinite(torch.tensor(metrics["teacher_nll"]))


def test_sharegpt_turns_are_accepted(tmp_path):
    from transfuse.lm.data import load_records, tokenize_records

    plain = load_records(str(_chat(tmp_path / "a.jsonl")))
    share = load_records(str(_chat(tmp_path / "b.jsonl", sharegpt=True)))
    assert share == plain
    tok = make_tokenizer()
    assert torch.equal(tokenize_records(share, tok, seq_len=24).mask, tokenize_records(plain, tok, seq_len=24).mask)
    (tmp_path / "c.jsonl").write_text(json.dumps({"conversations": [{"from": "narrator", "value": "w1"}]}))
    with pytest.raises(TransfuseError, match="ShareGPT turn 'from': 'narrator'"):
        load_records(str(tmp_path / "c.jsonl"))


def test_objective_that_needs_dense_logits_with_the_cache(tmp_path):
    from transfuse.recipes.distill_lm import main

    _folder(tmp_path / "teacher")
    with pytest.raises(TransfuseError, match="'lssd' cannot train on this top-k teacher cache.*teacher.cache=false"):
        main(_cfg(tmp_path, objective={"name": "lssd"}))
    assert main(_cfg(tmp_path, objective={"name": "lssd"}, teacher={"cache": False}))["steps"] == 1


def test_bad_chunk_mode_and_seq_len_beyond_positions(tmp_path):
    from transfuse.config import load_config
    from transfuse.recipes.distill_lm import LMConfig, main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: lm\n")
    with pytest.raises(TransfuseError, match="chunk_mode"):
        load_config(LMConfig, recipe, ["objective.chunk_mode=fast"])
    _folder(tmp_path / "teacher")  # 128 positions
    with pytest.raises(TransfuseError, match="data.seq_len=200 is beyond the teacher .* 128 positions"):
        main(_cfg(tmp_path, data={"seq_len": 200}))


def test_teacher_nll_prompts_are_the_turns_before_the_response(tmp_path):
    from transfuse.lm.data import load_records, tokenize_records
    from transfuse.recipes.distill_lm import eval_prompts

    tok = make_tokenizer()
    data = tokenize_records(load_records(str(_chat(tmp_path / "a.jsonl", n=3))), tok, seq_len=24)
    prompts = eval_prompts(data, prompt_tokens=2, samples=3)
    want = tok.apply_chat_template([{"role": "user", "content": "w0 w1 w2"}], tokenize=False, add_generation_prompt=True)
    assert tok.decode(prompts[0]) == tok.decode(tok(want, add_special_tokens=False)["input_ids"])
    text = tokenize_records([{"text": " ".join(f"w{j}" for j in range(20))}], tok, seq_len=8)
    assert [len(p) for p in eval_prompts(text, prompt_tokens=3, samples=2)] == [3, 3]
