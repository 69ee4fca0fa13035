"""Generation with a KV cache, on-policy mixing (GKD) and cached sequence-level KD."""
from __future__ import annotations

import torch

from transfuse.lm.data import tokenize_records
from transfuse.lm.generate import OnPolicyMixing, join_rows, prompts_of, sample_continuations, sequence_kd_dataset
from transfuse.lm.models import CausalLM
from transfuse.objectives import build_objective
from transfuse.signals import Batch

from lm_helpers import make_llama


def test_greedy_with_cache_and_left_padding_equals_naive_greedy():
    m = make_llama(seed=4)
    prompts = [[1, 8, 9, 10, 11], [1, 12]]
    got = sample_continuations(m, prompts, max_new_tokens=5, greedy=True)
    for p, g in zip(prompts, got):
        ids = list(p)
        for _ in range(5):
            ids.append(int(m(torch.tensor([ids])).logits[0, -1].argmax()))
        assert g == ids[len(p):]


def test_sampling_repeats_with_the_same_generator():
    m = make_llama(seed=5)
    a = sample_continuations(m, [[1, 8]], max_new_tokens=6, generator=torch.Generator().manual_seed(3))
    b = sample_continuations(m, [[1, 8]], max_new_tokens=6, generator=torch.Generator().manual_seed(3))
    assert a == b


def test_join_rows_counts_only_the_response():
    rows = join_rows([[1, 8, 9]], [[10, 2]], seq_len=7, pad_token_id=0)
    assert rows.inputs[0].tolist() == [1, 8, 9, 10, 2, 0, 0]
    assert rows.mask[0].tolist() == [False, False, True, True, False, False, False]
    assert rows.labels[0, 2:4].tolist() == [10, 2]


def test_on_policy_mixing(tokenizer):
    data = tokenize_records([{"prompt": "w1 w2", "response": "w3 w4 w5"}] * 4, tokenizer, seq_len=20)
    batch = Batch(inputs=data.inputs, labels=data.labels, mask=data.mask, index=data.index,
                  extra={"attention_mask": data.attention_mask})
    student = CausalLM(make_llama(seed=6))
    always = OnPolicyMixing(build_objective("jsd"), lmbda=1.0, max_new_tokens=4, eos_token_id=2)
    always.bind(student)
    new = always.prepare(batch, generator=torch.Generator().manual_seed(0))
    assert new.extra["on_policy"] and always.generated_batches == 1
    prompts = prompts_of(batch)
    for row, p in enumerate(prompts):
        assert new.inputs[row, : len(p)].tolist() == p  # same prompt, the student's continuation after it
        assert 1 <= int(new.mask[row].sum()) <= 4
    never = OnPolicyMixing(build_objective("jsd"), lmbda=0.0)
    never.bind(student)
    assert never.prepare(batch, generator=torch.Generator().manual_seed(0)) is batch


def test_sequence_kd_generates_once(tokenizer, tmp_path):
    data = tokenize_records([{"prompt": "w1 w2", "response": "w3"}, {"prompt": "w4", "response": "w5 w6"}], tokenizer, seq_len=16)
    teacher = make_llama(seed=7)
    first = sequence_kd_dataset(teacher, data, cache_dir=tmp_path, teacher_fingerprint="t", max_new_tokens=3)
    calls = []
    teacher.forward = lambda *a, **k: calls.append(1)  # a second build must not run the teacher
    second = sequence_kd_dataset(teacher, data, cache_dir=tmp_path, teacher_fingerprint="t", max_new_tokens=3)
    assert not calls and torch.equal(first.inputs, second.inputs) and torch.equal(first.mask, second.mask)
    assert int(first.mask.sum()) > 0 and torch.equal(first.index, data.index)
