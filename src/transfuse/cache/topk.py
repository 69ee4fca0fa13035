"""An offline top-k teacher cache for language models: per counted token, the teacher's top-k
log-probabilities, their token ids and the log of the remaining mass.

Layout of a cache folder::

    meta.json                 format, k, temperature, vocab size, number of samples, shard size,
                              fingerprint parts (teacher weights, tokenizer, data, temperature, k)
    shard-000000.safetensors  samples with ids [0, S), then [S, 2S), ...: keyed by sample id, never by step

A shard holds ``ids`` (n,), ``offsets`` (n + 1,) into the token rows, ``positions`` (R,) int32
(the logit position of each row in its sample), ``indices`` (R, K) int16 (uint16 bit pattern,
vocabularies up to 65,536; int32 above), ``logprobs`` (R, K) float16, ``rest`` (R,) float32
log of the mass outside the top k. Shards are written whole, to a temporary file renamed into
place, as soon as all their samples arrived; an interrupted build keeps every finished shard and
``missing()`` says which samples are left. Reads go through memory-mapped slices of the shards
touched by a batch, so the cache never sits in RAM. On reading, the top-k probabilities are
rescaled so that they and the stored rest sum to one (float16 rounding otherwise breaks that).

Quantised log-probs (``logprob_format`` uint8 / uint16, meta.json says which): instead of
``logprobs`` a shard holds ``codes`` (R, K) (uint8, or uint16 as an int16 bit pattern) and per row
``offset`` / ``scale`` (R,) float32, the log-prob being ``offset + code * scale`` (offset: the row's
smallest top-k log-prob, scale: its range / (2^bits - 1); the error is at most scale / 2 per entry).

Bytes per token (:func:`bytes_per_token`): float16 K (2 + 2) + 8, e.g. 264 at k = 64; uint8
K (1 + 2) + 16, e.g. 112 at k = 32; uint16 K (2 + 2) + 16.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..errors import TransfuseError
from .._atomic import write_json
from ..signals import Batch, Outputs

FORMAT = "transfuse-topk/1"
LOGPROB_FORMATS = ("float16", "uint8", "uint16")
_LEVELS = {"uint8": 255, "uint16": 65535}
_FLOOR = -80.0  # quantised rows: log-probs below this (probabilities < 2e-35) are stored as this


def bytes_per_token(k: int, logprob_format: str = "float16", vocab_size: int = 65536) -> int:
    """Nominal cache bytes per counted token: log-probs + ids (K each) + position, rest (+ scale, offset)."""
    lp = {"float16": 2, "uint8": 1, "uint16": 2}[logprob_format]
    ids = 2 if vocab_size <= 65536 else 4
    return k * (lp + ids) + 8 + (0 if logprob_format == "float16" else 8)


def quantize_logprobs(logprobs: Tensor, logprob_format: str) -> Tuple[Tensor, Tensor, Tensor]:
    """(R, K) log-probs -> codes (R, K) (uint8, or int16 holding uint16 bits), offset (R,), scale (R,) float32."""
    levels = _LEVELS[logprob_format]
    lp = logprobs.float().clamp_min(_FLOOR)
    lo, hi = lp.min(-1).values, lp.max(-1).values  # (R,)
    scale = ((hi - lo) / levels).clamp_min(1e-12)
    codes = torch.round((lp - lo.unsqueeze(-1)) / scale.unsqueeze(-1)).clamp(0, levels).to(torch.int32)
    codes = codes.to(torch.uint8) if logprob_format == "uint8" else codes.to(torch.int16)  # int16: uint16 bit pattern
    return codes, lo, scale


def dequantize_logprobs(codes: Tensor, offset: Tensor, scale: Tensor) -> Tensor:
    """codes (R, K), offset / scale (R,) -> (R, K) float32 log-probs."""
    c = codes.to(torch.int32) & 0xFFFF if codes.dtype == torch.int16 else codes.to(torch.int32)
    return offset.float().unsqueeze(-1) + c.float() * scale.float().unsqueeze(-1)


def topk_of_logits(logits: Tensor, k: int, temperature: float = 1.0) -> Tuple[Tensor, Tensor, Tensor]:
    """(..., V) logits -> top-k log-probs (..., K) float32, ids (..., K) int64, log rest mass (...,)."""
    lp = torch.log_softmax(logits.float() / temperature, dim=-1)  # (..., V)
    top, idx = lp.topk(k, dim=-1)  # (..., K)
    if k >= lp.shape[-1]:
        rest = torch.full(top.shape[:-1], float("-inf"), device=lp.device)
    else:
        rest = torch.logsumexp(lp.scatter(-1, idx, float("-inf")), dim=-1)  # (...,)
    return top, idx, rest


def reconstruct_dense(topk_logprobs: Tensor, topk_indices: Tensor, vocab_size: int,
                      tail_prior: Optional[Tensor] = None) -> Tensor:
    """Dense log-probs (..., V) from a top-k signal, the rest spread evenly over the other tokens, or
    in proportion to ``tail_prior`` (V,) (e.g. the teacher's mean distribution over other data).

    Only a diagnostic (the cache's fidelity); objectives use the K + 1 buckets instead.
    """
    top = topk_logprobs.float()
    k = top.shape[-1]
    rest = (1.0 - top.double().exp().sum(-1, keepdim=True)).clamp_min(1e-30)  # (..., 1)
    if tail_prior is None:
        fill = (rest / max(vocab_size - k, 1)).log().float()
        dense = fill.expand(*top.shape[:-1], vocab_size).clone()
    else:
        prior = tail_prior.double().clamp_min(1e-30).expand(*top.shape[:-1], vocab_size)
        off = prior.scatter(-1, topk_indices.long(), 0.0)  # (..., V): the prior on the tokens outside the top k
        dense = (off / off.sum(-1, keepdim=True).clamp_min(1e-300) * rest).clamp_min(1e-300).log().float()
    return dense.scatter(-1, topk_indices.long(), top)


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 over a tokenizer's class, vocabulary, special tokens and chat template (16 hex digits)."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    h.update(json.dumps(sorted(vocab.items())).encode())
    h.update(json.dumps(getattr(tokenizer, "all_special_tokens", []) or []).encode())
    h.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    return h.hexdigest()[:16]


def fingerprint_parts(*, teacher: str, tokenizer: str, data: str, temperature: float, k: int,
                      fmt: str = "float16") -> Dict[str, str]:
    """The fingerprint of a top-k cache: what must match for its contents to be valid (the
    log-prob format only when quantised, so float16 caches built before it stay valid)."""
    parts = {"teacher": teacher, "tokenizer": tokenizer, "data": data, "temperature": repr(float(temperature)), "k": str(int(k))}
    return parts if fmt == "float16" else {**parts, "logprob_format": fmt}


def _check_meta(folder: Path, meta: dict, expected: Dict[str, str]) -> None:
    if meta.get("format") != FORMAT:
        raise TransfuseError(f"{str(folder)!r} is not a transfuse top-k cache (format {meta.get('format')!r}); delete it or pick another folder")
    have = meta.get("fingerprint", {})
    diff = [name for name in expected if have.get(name) != expected[name]]
    if diff:
        what = ", ".join(f"{n} (cache {have.get(n)!r}, now {expected[n]!r})" for n in diff)
        raise TransfuseError(
            f"the top-k cache in {str(folder)!r} was built for another {what}; "
            "delete the folder or point the cache to a new one"
        )


class TopKCacheWriter:
    """Streams samples into shards keyed by sample id; resumes an interrupted build."""

    def __init__(
        self,
        folder: str | Path,
        *,
        fingerprint: Dict[str, str],
        k: int,
        temperature: float,
        vocab_size: int,
        num_samples: int,
        shard_size: int = 256,
        logprob_format: str = "float16",
    ) -> None:
        if logprob_format not in LOGPROB_FORMATS:
            raise TransfuseError(f"unknown top-k cache format {logprob_format!r}; choose one of {', '.join(LOGPROB_FORMATS)}")
        self.logprob_format = logprob_format
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.k, self.vocab_size, self.num_samples, self.shard_size = k, vocab_size, num_samples, shard_size
        meta_path = self.folder / "meta.json"
        meta = {
            "format": FORMAT, "k": k, "temperature": float(temperature), "vocab_size": vocab_size,
            "num_samples": num_samples, "shard_size": shard_size, "fingerprint": fingerprint, "complete": False,
            "logprob_format": logprob_format,
        }
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            _check_meta(self.folder, old, fingerprint)
            if (old["num_samples"], old["shard_size"]) != (num_samples, shard_size):
                raise TransfuseError(
                    f"the top-k cache in {str(self.folder)!r} holds {old['num_samples']} samples in shards of "
                    f"{old['shard_size']}, not {num_samples} in shards of {shard_size}; delete it to rebuild"
                )
            meta["complete"] = old.get("complete", False)
        write_json(meta_path, meta, indent=1)
        self.meta = meta
        self.n_shards = (num_samples + shard_size - 1) // shard_size
        self._done = {j for j in range(self.n_shards) if self._shard_path(j).exists()}
        self._buffers: Dict[int, Dict[int, Tuple[Tensor, ...]]] = {}

    def _shard_path(self, j: int) -> Path:
        return self.folder / f"shard-{j:06d}.safetensors"

    def _shard_ids(self, j: int) -> range:
        return range(j * self.shard_size, min((j + 1) * self.shard_size, self.num_samples))

    def missing(self) -> List[int]:
        """Sample ids not yet in a finished shard (those to compute)."""
        return [i for j in range(self.n_shards) if j not in self._done for i in self._shard_ids(j)]

    def add(self, sample_id: int, positions: Tensor, logprobs: Tensor, indices: Tensor, rest: Tensor) -> None:
        """One sample: positions (n,), logprobs / indices (n, K), rest (n,) log mass outside the top k."""
        if not 0 <= sample_id < self.num_samples:
            raise ValueError(f"sample id {sample_id} outside [0, {self.num_samples})")
        j = sample_id // self.shard_size
        if j in self._done:
            return
        big = self.vocab_size > 65536
        idx = indices.to(torch.int32) if big else indices.to(torch.int32).to(torch.int16)  # uint16 bit pattern
        lp = logprobs.to(torch.float16).cpu() if self.logprob_format == "float16" else quantize_logprobs(logprobs.cpu(), self.logprob_format)
        self._buffers.setdefault(j, {})[sample_id] = (positions.to(torch.int32).cpu(), lp, idx.cpu(), rest.float().cpu())
        if len(self._buffers[j]) == len(self._shard_ids(j)):
            self._flush(j)

    def _flush(self, j: int) -> None:
        items = sorted(self._buffers.pop(j).items())
        ids = torch.tensor([i for i, _ in items], dtype=torch.int64)
        lengths = torch.tensor([len(v[0]) for _, v in items], dtype=torch.int64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        tensors = {
            "ids": ids,
            "offsets": offsets,
            "positions": torch.cat([v[0] for _, v in items]),
            "indices": torch.cat([v[2] for _, v in items]).reshape(-1, self.k),
            "rest": torch.cat([v[3] for _, v in items]),
        }
        if self.logprob_format == "float16":
            tensors["logprobs"] = torch.cat([v[1] for _, v in items]).reshape(-1, self.k)
        else:
            tensors["codes"] = torch.cat([v[1][0] for _, v in items]).reshape(-1, self.k)
            tensors["offset"] = torch.cat([v[1][1] for _, v in items])
            tensors["scale"] = torch.cat([v[1][2] for _, v in items])
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".safetensors")
        os.close(fd)
        save_file(tensors, tmp, metadata={"format": FORMAT})
        os.replace(tmp, self._shard_path(j))
        self._done.add(j)

    def close(self) -> None:
        """Mark the cache complete when every shard is written (buffered partial shards are dropped)."""
        self._buffers.clear()
        if len(self._done) == self.n_shards:
            self.meta["complete"] = True
            write_json(self.folder / "meta.json", self.meta, indent=1)


class TopKCache:
    """Reads a finished top-k cache by sample id, streaming from memory-mapped shards."""

    def __init__(self, folder: str | Path, *, expected: Optional[Dict[str, str]] = None) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise TransfuseError(f"no top-k cache in {str(self.folder)!r}; build it first (lm recipe: teacher.cache)")
        meta = json.loads(meta_path.read_text())
        if expected is not None:
            _check_meta(self.folder, meta, expected)
        if not meta.get("complete"):
            raise TransfuseError(
                f"the top-k cache in {str(self.folder)!r} is incomplete (its build was interrupted); build it again to finish it"
            )
        self.meta = meta
        self.k, self.shard_size, self.vocab_size = meta["k"], meta["shard_size"], meta["vocab_size"]
        self.temperature = meta["temperature"]
        self.logprob_format = meta.get("logprob_format", "float16")
        self._handles: Dict[int, object] = {}
        self._offsets: Dict[int, Tuple[Tensor, Tensor]] = {}

    def _shard(self, j: int):
        if j not in self._handles:
            path = self.folder / f"shard-{j:06d}.safetensors"
            if not path.exists():
                raise TransfuseError(f"the top-k cache in {str(self.folder)!r} lacks {path.name}; rebuild the cache")
            handle = safe_open(str(path), framework="pt")
            self._handles[j] = handle
            self._offsets[j] = (handle.get_tensor("ids"), handle.get_tensor("offsets"))
        return self._handles[j]

    def sample(self, sample_id: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """positions (n,), logprobs (n, K) float32 (rescaled), indices (n, K) int64, rest (n,) of one sample."""
        j = sample_id // self.shard_size
        handle = self._shard(j)
        ids, offsets = self._offsets[j]
        row = sample_id - j * self.shard_size
        if row >= len(ids) or int(ids[row]) != sample_id:
            raise TransfuseError(f"the top-k cache has no sample {sample_id}; it was built for other data")
        a, b = int(offsets[row]), int(offsets[row + 1])
        positions = handle.get_slice("positions")[a:b].long()
        if self.logprob_format == "float16":
            lp = handle.get_slice("logprobs")[a:b].float()
        else:
            lp = dequantize_logprobs(handle.get_slice("codes")[a:b], handle.get_slice("offset")[a:b], handle.get_slice("scale")[a:b])
        idx = handle.get_slice("indices")[a:b].long()
        if self.vocab_size <= 65536:
            idx = idx & 0xFFFF
        rest = handle.get_slice("rest")[a:b].float()
        top_mass = lp.double().exp().sum(-1)  # (n,)
        scale = torch.log((1.0 - rest.double().exp()).clamp_min(1e-30) / top_mass)
        return positions, (lp.double() + scale.unsqueeze(-1)).float(), idx, rest

    def lookup(self, index: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Top-k signal for a batch: ids (B,), mask (B, T) -> logprobs (B, T, K), indices (B, T, K).

        Positions the mask does not count get token 0 with probability 1 (they are never used).
        """
        bsz, length = mask.shape
        # Positions the cache does not hold: a valid one-hot distribution on token 0 (never counted).
        lp = torch.full((bsz, length, self.k), -1e4)
        lp[..., 0] = 0.0
        idx = torch.arange(self.k).expand(bsz, length, self.k).clone()
        for b, sid in enumerate(index.tolist()):
            positions, s_lp, s_idx, _ = self.sample(int(sid))
            inside = positions < length
            lp[b, positions[inside]] = s_lp[inside]
            idx[b, positions[inside]] = s_idx[inside]
            needed = mask[b].bool().cpu().nonzero().squeeze(-1)
            have = torch.zeros(length, dtype=torch.bool)
            have[positions[inside]] = True
            if not bool(have[needed].all()):
                raise TransfuseError(
                    f"the top-k cache does not cover every counted token of sample {sid}; "
                    "it was built with another mask or sequence length: rebuild it"
                )
        return lp.to(mask.device), idx.to(mask.device)


class TopKTeacher:
    """A teacher source that reads the top-k cache by the batch's sample ids (needs ``batch.index``, ``batch.mask``)."""

    def __init__(self, cache: TopKCache) -> None:
        self.cache = cache

    def __call__(self, batch: Batch) -> Outputs:
        if batch.index is None or batch.mask is None:
            raise TransfuseError("a top-k teacher cache needs batches with sample ids (index) and a token mask")
        lp, idx = self.cache.lookup(batch.index, batch.mask)
        return Outputs(topk_logprobs=lp, topk_indices=idx)


def build_topk_cache(
    folder: str | Path,
    *,
    teacher_logits,
    batches: Iterable[Batch],
    fingerprint: Dict[str, str],
    k: int,
    temperature: float,
    vocab_size: int,
    num_samples: int,
    shard_size: int = 256,
    progress=None,
    logprob_format: str = "float16",
) -> TopKCache:
    """Run ``teacher_logits(batch) -> (B, T, V)`` over ``batches`` (in sample-id order) and store the
    top-k of every counted token; samples already in finished shards are skipped (resume)."""
    writer = TopKCacheWriter(
        folder, fingerprint=fingerprint, k=k, temperature=temperature, vocab_size=vocab_size,
        num_samples=num_samples, shard_size=shard_size, logprob_format=logprob_format,
    )
    todo = set(writer.missing())
    if todo:
        for batch in batches:
            ids = batch.index.tolist()
            if not any(i in todo for i in ids):
                continue
            with torch.inference_mode():
                logits = teacher_logits(batch)  # (B, T, V)
                keep = batch.mask.bool().to(logits.device)  # (B, T)
                top, idx, rest = topk_of_logits(logits[keep], k, temperature)  # (n, K), (n, K), (n,): whole batch at once
            counts = keep.sum(-1).tolist()
            top, idx, rest = top.cpu(), idx.cpu(), rest.cpu()
            start = 0
            for b, sid in enumerate(ids):
                end = start + int(counts[b])
                if sid in todo:
                    positions = keep[b].nonzero().squeeze(-1).cpu()  # (n_b,)
                    writer.add(sid, positions, top[start:end], idx[start:end], rest[start:end])
                start = end
            if progress is not None:
                progress(len(ids))
    writer.close()
    return TopKCache(folder, expected=fingerprint)
