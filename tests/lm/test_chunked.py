"""The chunked loss equals the naive full-logits loss in value and gradients (1e-5)."""
from __future__ import annotations

import pytest
import torch

from transfuse.lm.chunked import ChunkedLMObjective, chunked_objective_sum
from transfuse.lm.models import CausalLM, LMTeacher
from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs

from lm_helpers import make_llama

NAMES = ["forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl", "taid", "lssd", "ce"]


def _setup(seed=0, B=3, T=7, D=8, V=23):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, D, generator=g)
    w = torch.randn(V, D, generator=g) * 0.5
    b = torch.randn(V, generator=g) * 0.1
    th = torch.randn(B, T, D, generator=g)
    tw = torch.randn(V, D, generator=g) * 0.5
    mask = torch.rand(B, T, generator=g) > 0.3
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[~mask] = -100
    return h, w, b, th, tw, mask, labels


class _Head(torch.nn.Module):
    def __init__(self, w, b=None):
        super().__init__()
        self.weight = w
        self.bias = b


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["fused", "checkpoint"])
def test_chunked_matches_naive(name, mode):
    h, w, b, th, tw, mask, labels = _setup()
    h, w, b = h.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    obj = build_objective(name)
    batch = Batch(inputs=torch.zeros(mask.shape, dtype=torch.long), labels=labels, mask=mask)
    naive = obj(Outputs(logits=h @ w.t() + b), Outputs(logits=th @ tw.t()), batch)
    g_naive = torch.autograd.grad(naive, [h, w, b])
    wrapped = ChunkedLMObjective(obj, teacher_head=_Head(tw), student_head=_Head(w, b), chunk_size=4, mode=mode)
    chunked = wrapped(Outputs(hidden={"last": h}), Outputs(hidden={"last": th}), batch)
    g_chunked = torch.autograd.grad(chunked, [h, w, b])
    assert float(chunked) == pytest.approx(float(naive), rel=1e-5, abs=1e-6)
    for a, c in zip(g_naive, g_chunked):
        assert torch.allclose(a, c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "taid"])
def test_chunked_with_topk_teacher_matches_naive(name):
    h, w, _, th, tw, mask, labels = _setup(1)
    h, w = h.requires_grad_(), w.requires_grad_()
    lp = torch.log_softmax(th @ tw.t(), -1)
    top, idx = lp.topk(5, -1)
    teacher = Outputs(topk_logprobs=top, topk_indices=idx)
    obj = build_objective(name)
    batch = Batch(inputs=torch.zeros(mask.shape), mask=mask)
    naive = obj(Outputs(logits=h @ w.t()), teacher, batch)
    g1 = torch.autograd.grad(naive, [h, w])
    chunked = ChunkedLMObjective(obj, student_head=_Head(w), chunk_size=3)(Outputs(hidden={"last": h}), teacher, batch)
    g2 = torch.autograd.grad(chunked, [h, w])
    assert float(chunked) == pytest.approx(float(naive), rel=1e-5)
    assert all(torch.allclose(a, c, atol=1e-5) for a, c in zip(g1, g2))


def test_padding_rows_are_cut():
    """vocab_size cuts both output layers to their first rows."""
    h, w, _, th, tw, mask, _ = _setup(2, V=20)
    w_big = torch.cat([w, torch.randn(4, w.shape[1])]).requires_grad_()
    obj = build_objective("forward_kl")
    batch = Batch(inputs=torch.zeros(mask.shape), mask=mask)
    naive = obj(Outputs(logits=h @ w.t()), Outputs(logits=th @ tw.t()), batch)
    chunked = ChunkedLMObjective(obj, teacher_head=_Head(tw), student_head=_Head(w_big), vocab_size=20)(
        Outputs(hidden={"last": h}), Outputs(hidden={"last": th}), batch)
    assert float(chunked) == pytest.approx(float(naive), rel=1e-5)
    chunked.backward()
    assert float(w_big.grad[20:].abs().sum()) == 0.0


def test_no_grad_needed_computes_no_gradient():
    h, w, _, th, tw, mask, _ = _setup(3)
    with torch.no_grad():
        v = chunked_objective_sum(build_objective("forward_kl"), student_hidden=h[mask], student_weight=w,
                                  teacher_hidden=th[mask], teacher_weight=tw, chunk_size=2)
    assert torch.isfinite(v) and not v.requires_grad


def test_real_model_hidden_path_equals_logits_path():
    """CausalLM(hidden=True) + the chunked objective == CausalLM logits + the objective, on a tiny Llama."""
    student, teacher = make_llama(seed=0), make_llama(seed=1, layers=3)
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, :2] = False
    batch = Batch(inputs=ids, mask=mask)
    obj = build_objective("jsd")
    dense = obj(CausalLM(student)(ids), LMTeacher(teacher)(batch), batch)
    g1 = torch.autograd.grad(dense, list(student.parameters()))
    wrapped = ChunkedLMObjective(obj, teacher_head=teacher.get_output_embeddings(), chunk_size=5)
    adapter = CausalLM(student, hidden=True)
    wrapped.bind(adapter)
    chunked = wrapped(adapter(ids), LMTeacher(teacher, hidden=True)(batch), batch)
    g2 = torch.autograd.grad(chunked, list(student.parameters()))
    assert float(chunked) == pytest.approx(float(dense), rel=1e-5)
    assert all(torch.allclose(a, c, atol=1e-5) for a, c in zip(g1, g2))
