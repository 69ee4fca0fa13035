"""Top-k teacher cache: round trip, fingerprint mismatch, interrupted-write resume, streaming reads."""
from __future__ import annotations

import json

import pytest
import torch

from transfuse.cache.topk import (
    TopKCache, TopKCacheWriter, TopKTeacher, build_topk_cache, fingerprint_parts, reconstruct_dense, topk_of_logits,
)
from transfuse.errors import TransfuseError
from transfuse.signals import Batch

V, K, T = 30, 4, 6


def _data(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, T, V, generator=g) * 3
    mask = torch.rand(n, T, generator=g) > 0.3
    return logits, mask


def _fp(**kw):
    parts = dict(teacher="t1", tokenizer="tok", data="d1", temperature=1.0, k=K)
    parts.update(kw)
    return fingerprint_parts(**parts)


def _batches(logits, mask, bs=3):
    for s in range(0, len(logits), bs):
        ids = torch.arange(s, min(s + bs, len(logits)))
        yield Batch(inputs=torch.zeros(len(ids), T, dtype=torch.long), index=ids, mask=mask[ids], extra={"rows": logits[ids]})


def _build(folder, logits, mask, **kw):
    return build_topk_cache(folder, teacher_logits=lambda b: b.extra["rows"], batches=_batches(logits, mask),
                            fingerprint=kw.pop("fingerprint", _fp()), k=K, temperature=1.0, vocab_size=V,
                            num_samples=len(logits), shard_size=4, **kw)


def test_topk_of_logits_by_hand():
    z = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
    top, idx, rest = topk_of_logits(z, 2)
    p = torch.softmax(z, -1)
    assert idx.tolist() == [[1, 2]]
    assert torch.allclose(top.exp(), p[:, [1, 2]])
    assert torch.allclose(rest.exp(), p[:, [0, 3]].sum(-1))


def test_round_trip(tmp_path):
    logits, mask = _data()
    cache = _build(tmp_path / "c", logits, mask)
    assert sorted(p.name for p in (tmp_path / "c").glob("shard-*")) == ["shard-000000.safetensors", "shard-000001.safetensors", "shard-000002.safetensors"]
    ids = torch.tensor([7, 0, 3])
    via_source = TopKTeacher(cache)(Batch(inputs=torch.zeros(3, T), index=ids, mask=mask[ids])).topk_logprobs
    lp, idx = cache.lookup(ids, mask[ids])
    want_top, want_idx, want_rest = topk_of_logits(logits[ids], K)
    m = mask[ids]
    assert torch.equal(via_source, lp)
    assert torch.equal(idx[m], want_idx[m])
    assert torch.allclose(lp[m], want_top[m], atol=2e-3)  # float16 storage
    # the stored rest and the rescaled top-k sum to one
    assert torch.allclose(lp[m].exp().sum(-1) + want_rest[m].exp(), torch.ones(int(m.sum())), atol=1e-5)


def test_fingerprint_mismatch_is_a_clear_error(tmp_path):
    logits, mask = _data()
    _build(tmp_path / "c", logits, mask)
    with pytest.raises(TransfuseError, match=r"another temperature .*delete the folder"):
        TopKCache(tmp_path / "c", expected=_fp(temperature=2.0))
    with pytest.raises(TransfuseError, match="another teacher"):
        _build(tmp_path / "c", logits, mask, fingerprint=_fp(teacher="t2"))


def test_interrupted_write_resumes(tmp_path):
    logits, mask = _data()
    folder = tmp_path / "c"

    class Boom(Exception):
        pass

    def dying(batch):
        if int(batch.index[0]) >= 6:
            raise Boom
        return batch.extra["rows"]

    with pytest.raises(Boom):
        build_topk_cache(folder, teacher_logits=dying, batches=_batches(logits, mask), fingerprint=_fp(), k=K,
                         temperature=1.0, vocab_size=V, num_samples=len(logits), shard_size=4)
    assert json.loads((folder / "meta.json").read_text())["complete"] is False
    with pytest.raises(TransfuseError, match="incomplete"):
        TopKCache(folder)
    writer = TopKCacheWriter(folder, fingerprint=_fp(), k=K, temperature=1.0, vocab_size=V, num_samples=10, shard_size=4)
    assert writer.missing() == [4, 5, 6, 7, 8, 9]  # shard 0 survived; shard 1 was half-buffered and is redone
    seen = []

    def recording(batch):
        seen.extend(batch.index.tolist())
        return batch.extra["rows"]

    cache = build_topk_cache(folder, teacher_logits=recording, batches=_batches(logits, mask), fingerprint=_fp(), k=K,
                             temperature=1.0, vocab_size=V, num_samples=10, shard_size=4)
    assert min(seen) >= 3 and 0 not in seen  # the finished shard was not recomputed
    fresh = _build(tmp_path / "fresh", logits, mask)
    ids = torch.arange(10)
    assert all(torch.equal(a, b) for a, b in zip(cache.lookup(ids, mask), fresh.lookup(ids, mask)))


def test_uncovered_tokens_and_unknown_samples_are_errors(tmp_path):
    logits, mask = _data()
    cache = _build(tmp_path / "c", logits, mask)
    with pytest.raises(TransfuseError, match="does not cover"):
        cache.lookup(torch.tensor([1]), torch.ones(1, T, dtype=torch.bool))
    with pytest.raises(TransfuseError, match="no top-k cache"):
        TopKCache(tmp_path / "nothing")


def test_reads_stream_from_shards(tmp_path):
    """A lookup opens only the shards it needs."""
    logits, mask = _data()
    cache = _build(tmp_path / "c", logits, mask)
    cache.lookup(torch.tensor([9]), mask[[9]])
    assert list(cache._handles) == [2]


def test_reconstruct_dense_spreads_the_rest():
    z = torch.randn(2, V)
    top, idx, _ = topk_of_logits(z, K)
    dense = reconstruct_dense(top, idx, V)
    assert torch.allclose(dense.exp().sum(-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(dense.gather(-1, idx), top)


def test_low_mass_tokens_keep_their_values(tmp_path):
    """A counted token whose top-k holds little of the teacher's mass is returned as stored (regression)."""
    logits = torch.zeros(2, T, V)  # flat: the top 4 of 30 hold 4/30 of the mass
    mask = torch.ones(2, T, dtype=torch.bool)
    cache = _build(tmp_path / "c", logits, mask)
    lp, idx = cache.lookup(torch.arange(2), mask)
    assert torch.allclose(lp.exp().sum(-1), torch.full((2, T), 4 / 30), atol=1e-3)
