"""Issue 15: the top-k cache with quantised log-probs (uint8 / uint16 codes, per-row scale and offset):
round-trip error bounds, bytes per token on disk, the rest mass, and the fingerprint."""
from __future__ import annotations

import pytest
import torch

from transfuse.cache.topk import (
    TopKCacheWriter, build_topk_cache, bytes_per_token, dequantize_logprobs, fingerprint_parts, quantize_logprobs,
    reconstruct_dense, topk_of_logits,
)
from transfuse.errors import TransfuseError
from transfuse.objectives._functional import kl_from_logprobs
from transfuse.signals import Batch

V, T = 300, 12


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, T, V, generator=g) * 4, torch.rand(n, T, generator=g) > 0.25


def _build(folder, logits, mask, k, fmt):
    def batches():
        for s in range(0, len(logits), 8):
            ids = torch.arange(s, min(s + 8, len(logits)))
            yield Batch(inputs=torch.zeros(len(ids), T, dtype=torch.long), index=ids, mask=mask[ids], extra={"rows": logits[ids]})

    fp = fingerprint_parts(teacher="t", tokenizer="tok", data="d", temperature=1.0, k=k, fmt=fmt)
    return build_topk_cache(folder, teacher_logits=lambda b: b.extra["rows"], batches=batches(), fingerprint=fp, k=k,
                            temperature=1.0, vocab_size=V, num_samples=len(logits), shard_size=16, logprob_format=fmt)


@pytest.mark.parametrize("fmt,levels", [("uint8", 255), ("uint16", 65535)])
def test_quantise_round_trip_error_is_at_most_half_a_step(fmt, levels):
    top, _, _ = topk_of_logits(torch.randn(500, V) * 5, 32)  # (500, 32) sorted log-probs
    codes, offset, scale = quantize_logprobs(top, fmt)
    assert codes.dtype == (torch.uint8 if fmt == "uint8" else torch.int16)
    back = dequantize_logprobs(codes, offset, scale)
    err = (back - top).abs()
    assert bool((err <= scale.unsqueeze(-1) / 2 + 1e-5).all())
    assert torch.allclose(scale, (top.max(-1).values - top.min(-1).values) / levels)
    assert float(err.max()) > 0  # it is a lossy code, not a copy


def test_quantised_cache_reads_back_within_bounds_and_keeps_the_mass(tmp_path):
    logits, mask = _data()
    k = 16
    exact_top, exact_idx, exact_rest = topk_of_logits(logits[mask], k)  # (n, K)
    for fmt, step in (("uint8", 255), ("uint16", 65535)):
        cache = _build(tmp_path / fmt, logits, mask, k, fmt)
        assert cache.logprob_format == fmt
        lp, idx = cache.lookup(torch.arange(len(logits)), mask)
        lp, idx = lp[mask], idx[mask]
        assert torch.equal(idx, exact_idx)
        # read-back rescales the top-k so they and the stored rest sum to one
        total = lp.double().exp().sum(-1) + exact_rest.double().exp()
        assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
        span = (exact_top.max(-1).values - exact_top.min(-1).values).unsqueeze(-1)  # (n, 1)
        # half a step of the code, plus the common shift of the rescaling (bounded by the same step)
        assert bool(((lp - exact_top).abs() <= span / step + 1e-4).all())


def test_bytes_per_token_on_disk_and_the_150_byte_target(tmp_path):
    logits, mask = _data()
    tokens = int(mask.sum())
    sizes = {}
    for fmt in ("float16", "uint8", "uint16"):
        _build(tmp_path / fmt, logits, mask, 32, fmt)
        sizes[fmt] = sum(p.stat().st_size for p in (tmp_path / fmt).glob("shard-*.safetensors")) / tokens
        nominal = bytes_per_token(32, fmt)
        assert nominal <= sizes[fmt] <= nominal + 12  # + per-sample ids/offsets and the safetensors headers
    assert bytes_per_token(32, "uint8") == 112 <= 150 < bytes_per_token(64, "float16") == 264
    assert sizes["uint8"] < 0.85 * sizes["float16"]


def test_uint8_reconstruction_is_as_faithful_as_float16(tmp_path):
    logits, mask = _data()
    t_lp = torch.log_softmax(logits[mask].float(), -1)
    kl = {}
    for fmt in ("float16", "uint8"):
        lp, idx = _build(tmp_path / fmt, logits, mask, 32, fmt).lookup(torch.arange(len(logits)), mask)
        kl[fmt] = float(kl_from_logprobs(t_lp, reconstruct_dense(lp[mask], idx[mask], V)).mean())
    assert kl["uint8"] == pytest.approx(kl["float16"], abs=2e-3)


def test_tail_prior_reconstruction_sums_to_one_and_follows_the_prior():
    top, idx, _ = topk_of_logits(torch.randn(5, V) * 3, 8)
    prior = torch.softmax(torch.randn(V), -1)
    rec = reconstruct_dense(top, idx, V, tail_prior=prior).double().exp()  # (5, V)
    assert torch.allclose(rec.sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-5)
    off = torch.ones(5, V, dtype=torch.bool).scatter(-1, idx, False)
    ratio = rec[0][off[0]] / prior.double()[off[0]]  # the tail is proportional to the prior
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)


def test_format_is_part_of_the_fingerprint(tmp_path):
    logits, mask = _data(8)
    _build(tmp_path / "c", logits, mask, 8, "uint8")
    with pytest.raises(TransfuseError, match="logprob_format"):
        TopKCacheWriter(tmp_path / "c", fingerprint=fingerprint_parts(teacher="t", tokenizer="tok", data="d",
                                                                      temperature=1.0, k=8, fmt="uint16"),
                        k=8, temperature=1.0, vocab_size=V, num_samples=8, shard_size=16, logprob_format="uint16")
    with pytest.raises(TransfuseError, match="unknown top-k cache format"):
        TopKCacheWriter(tmp_path / "d", fingerprint={}, k=8, temperature=1.0, vocab_size=V, num_samples=8,
                        logprob_format="int4")
