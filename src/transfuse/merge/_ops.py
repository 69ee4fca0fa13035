"""Shared merge math: exact streaming order statistics, trimming, sign election, disjoint mean.

Methods import from here so each formula exists once.
"""
from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, List, Sequence, Tuple

from .._lazy import torch

if TYPE_CHECKING:
    from torch import Tensor

_BINS = 1 << 16


def float_keys(x: Tensor) -> Tensor:
    """int32 keys whose signed integer order equals the float order of ``x`` (any shape, float32;
    -0.0 just below +0.0): negative floats get their 31 low bits flipped. Three int32 ops (the
    int64 form with ``where`` took ~30% of PCB's time)."""
    bits = x.contiguous().to(torch.float32).view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def keys_to_float(keys: Tensor) -> Tensor:
    """The floats of ``float_keys`` keys (the map is its own inverse)."""
    k = keys.to(torch.int32)
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).view(torch.float32)


class RadixSelect:
    """Exact k-th smallest values of S streams of float32, in two passes over the data.

    Pass 0 histograms the top 16 bits of each value's order key; ``set_ranks`` finds the bin
    of every wanted rank; pass 1 histograms the low 16 bits inside those bins. Memory is two
    histograms, whatever the stream length, so a whole model's top-k needs no sorting.
    ``nonneg=True`` (magnitudes): the float bits are already the order key (int32, cheaper).
    """

    def __init__(self, streams: int, *, nonneg: bool = False) -> None:
        self.streams = streams
        self.nonneg = nonneg
        self.coarse = torch.zeros(streams * _BINS, dtype=torch.int64)
        self.count = torch.zeros(streams, dtype=torch.int64)
        self.fine: Tensor | None = None
        self.bins: Tensor | None = None

    def _keys(self, v: Tensor) -> Tuple[Tensor, Tensor]:
        """(keys, top 16 bits in [0, 65536)) as int32; keys - 2**31 for signed values, whose
        unsigned order key is keys + 2**31 (same low 16 bits, top bits shifted by 32768)."""
        if self.nonneg:
            keys = v.contiguous().to(torch.float32).view(torch.int32)  # order key of |x| >= 0
            return keys, keys >> 16
        keys = float_keys(v)
        return keys, (keys >> 16) + 32768

    def add_coarse(self, v: Tensor) -> None:
        """v: (S, n) float values of each stream."""
        v = v.reshape(self.streams, -1)
        _, hi = self._keys(v)  # (S, n) in [0, 65536)
        if self.streams > 1:
            hi = hi + (torch.arange(self.streams, dtype=hi.dtype) * _BINS).unsqueeze(1)
        self.coarse += torch.bincount(hi.reshape(-1), minlength=self.streams * _BINS)
        self.count += v.shape[1]

    def set_ranks(self, ranks: Sequence[Sequence[int]]) -> None:
        """ranks[s] = the 0-based ranks wanted in stream s (same count R for every stream)."""
        ranks_t = torch.as_tensor(ranks, dtype=torch.int64).reshape(self.streams, -1)  # (S, R)
        cum = self.coarse.view(self.streams, _BINS).cumsum(1)  # (S, BINS)
        self.bins = torch.searchsorted(cum, ranks_t, right=True)  # (S, R) bin holding each rank
        before = torch.where(self.bins > 0, cum.gather(1, (self.bins - 1).clamp(min=0)), torch.zeros_like(ranks_t))
        self.residual = ranks_t - before  # rank inside the bin
        self.fine = torch.zeros(self.bins.numel() * _BINS, dtype=torch.int64)
        self._bin_list = self.bins.tolist()

    def add_fine(self, v: Tensor) -> None:
        assert self.bins is not None and self.fine is not None
        v = v.reshape(self.streams, -1)
        keys, hi = self._keys(v)
        R = self.bins.shape[1]
        for s in range(self.streams):
            for r, b in enumerate(self._bin_list[s]):
                sel = keys[s][hi[s] == b] & 0xFFFF
                if sel.numel():
                    slot = (s * R + r) * _BINS
                    self.fine[slot : slot + _BINS] += torch.bincount(sel, minlength=_BINS)

    def values(self) -> Tensor:
        """(S, R) float32: the wanted order statistics."""
        assert self.bins is not None and self.fine is not None
        S, R = self.bins.shape
        cum = self.fine.view(S, R, _BINS).cumsum(2)
        low = torch.searchsorted(cum, self.residual.unsqueeze(2), right=True).squeeze(2)  # (S, R)
        keys = (self.bins << 16) | low  # unsigned order keys, int64
        if self.nonneg:
            return keys.to(torch.int32).view(torch.float32)
        return keys_to_float(keys - (1 << 31))


def keep_rank(n: int, density: float) -> int:
    """0-based ascending rank of the smallest kept magnitude when keeping the top ``density``.

    As the TIES reference code: k = n - int(n * density), threshold = k-th smallest |x|,
    keep |x| >= threshold (ties at the threshold are kept).
    """
    kept = int(n * density)
    if kept >= n:
        return 0
    return max(n - kept - 1, 0)


def elect_sign(x: Tensor) -> Tensor:
    """TIES sign election: sign of the sum over models, +1 where it is exactly 0 (K, *s) -> (*s)."""
    s = torch.sign(x.sum(0))
    return torch.where(s == 0, torch.ones_like(s), s)


def disjoint_merge(x: Tensor, w: Tensor, sign: Tensor, *, normalize: str) -> Tensor:
    """Sum of entries agreeing with ``sign``; normalised by agreeing count, weight, or not.

    x: (K, *s) trimmed deltas (unweighted; entries that disagree are zeroed IN PLACE);
    w: (K,); sign: (*s).
    """
    agree = (x * sign) > 0  # (K, *s)
    x.mul_(agree)
    total = torch.tensordot(w.to(x.dtype), x, dims=1)
    if normalize == "count":
        return total / agree.sum(0).clamp(min=1).to(x.dtype)
    if normalize == "weights":
        return total / torch.tensordot(w.to(x.dtype), agree.to(x.dtype), dims=1).clamp(min=1e-12)
    return total


def seed_for(seed: int, name: str, start: int = 0) -> int:
    """A 63-bit seed from (seed, tensor name, row offset): independent of visiting order."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{start}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


_M1, _M2 = 0x21F0AAAD, 0x735A2D97  # lowbias32 multipliers (C. Wellons, "hash prospector")
_WS = threading.local()  # per-thread workspace: fresh 4 MiB buffers per block cost page faults


def _workspace(n: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(counter base, int32 x, int32 tmp, float32 mask), each of at least n entries, reused."""
    ws = getattr(_WS, "bufs", None)
    if ws is None or ws[0].numel() < n:
        m = max(n, 1 << 20)
        ws = _WS.bufs = (torch.arange(m, dtype=torch.int32), torch.empty(m, dtype=torch.int32),
                         torch.empty(m, dtype=torch.int32), torch.empty(m, dtype=torch.float32))
    return ws


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _xorshift_(x: Tensor, s: int, tmp: Tensor) -> None:
    """x ^= x >>> s on int32 (a logical shift: the arithmetic one, masked)."""
    torch.bitwise_right_shift(x, s, out=tmp)
    tmp.bitwise_and_((1 << (32 - s)) - 1)
    x.bitwise_xor_(tmp)


def counter_key(seed: int, name: str, stream: int) -> int:
    """The 64-bit key of one (seed, tensor, stream) sequence of ``counter_bits``."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{name}\0{stream}".encode()).digest()[:8], "little")


def counter_bits(seed: int, name: str, stream: int, start: int, n: int) -> Tensor:
    """(n,) int32 uniform in [0, 2**24): random numbers for entries start..start+n-1 of a tensor.

    A counter-based generator (the idea of Salmon et al. 2011, "Parallel random numbers: as easy
    as 1, 2, 3"): entry i's number is a hash of (seed, tensor name, stream, i), so a DARE mask
    depends neither on the order tensors are visited in nor on how they are cut into blocks. The
    hash is two rounds of the lowbias32 integer mixer with a 64-bit key, computed with torch int32
    ops (which wrap). Why not torch.rand / torch.bernoulli: they ran at 0.23 and 0.08 G draws/s
    here, the bottleneck of a DARE merge. It is not cryptographic, and it need not be: the draws
    only have to be uniform and independent of the weights.

    Returns a view of this thread's workspace, valid until the thread's next call.
    """
    idx, x, tmp, _ = _workspace(n)
    x, tmp = x[:n], tmp[:n]
    key = counter_key(seed, name, stream)
    torch.add(idx[:n], _signed32(start + key), out=x)  # (n,) the counter, offset by the key's low half
    _xorshift_(x, 16, tmp)
    x.mul_(_signed32(_M1))
    x.bitwise_xor_(_signed32(key >> 32))
    _xorshift_(x, 15, tmp)
    x.mul_(_signed32(_M2))
    _xorshift_(x, 15, tmp)
    return x.bitwise_and_((1 << 24) - 1)


def keep_threshold(p: float) -> int:
    """The integer t with P(counter_bits < t) = t / 2**24 nearest to p."""
    return int(round(min(max(p, 0.0), 1.0) * (1 << 24)))


def keep_mask(seed: int, name: str, stream: int, start: int, n: int, p: float) -> Tensor:
    """(n,) float32, 1.0 with probability p (counter_bits < keep_threshold(p)) else 0.0.

    Float arithmetic rather than a bool mask: comparisons to bool, masked_fill_ and bool
    products ran at 0.5-3 G/s here against 15-25 G/s for float ops. The draws are integers
    below 2**24, exact in float32, so clamp(t - u, 0, 1) is exactly the indicator of u < t.
    View of this thread's workspace, valid until its next call.
    """
    u = counter_bits(seed, name, stream, start, n)
    mask = _workspace(n)[3][:n].copy_(u)
    return torch.sub(float(keep_threshold(p)), mask, out=mask).clamp_(0.0, 1.0)


def weighted_view(w: Tensor, x: Tensor) -> Tensor:
    return w.view(-1, *([1] * (x.dim() - 1)))


def ranks_per_stream(n: int, fractions: List[float]) -> List[int]:
    return [min(max(int(f), 0), n - 1) for f in fractions]


def tensor_magnitude_stats(pass_index: int, x: Tensor, rows: object, state: dict, ranks_fn) -> None:
    """Per-tensor passes gathering exact order statistics of |x| for every model.

    One block (rows is None): nothing to gather, ``tensor_magnitude_values`` selects directly.
    Several blocks: pass 0 and 1 of a :class:`RadixSelect` over the blocks.
    ranks_fn(n, k) -> 0-based ascending ranks wanted for model k among its n entries.
    """
    if rows is None:
        return
    K = x.shape[0]
    v = x.abs().reshape(K, -1)
    if pass_index == 0:
        state.setdefault("sel", RadixSelect(K, nonneg=True)).add_coarse(v)
        return
    sel = state["sel"]
    if sel.bins is None:
        n = int(sel.count[0])
        sel.set_ranks([ranks_fn(n, k) for k in range(K)])
    sel.add_fine(v)


def tensor_magnitude_values(x: Tensor, state: dict, ranks_fn) -> Tensor:
    """(K, R) order statistics of |x| per model (see ``tensor_magnitude_stats``)."""
    if "values" in state:
        return state["values"]
    if "sel" in state:
        state["values"] = state["sel"].values()
        return state["values"]
    K = x.shape[0]
    v = x.abs().reshape(K, -1)
    n = v.shape[1]
    if n == 0:
        return torch.zeros(K, len(ranks_fn(1, 0)))
    return torch.stack([torch.stack([v[k].kthvalue(r + 1).values for r in ranks_fn(n, k)]) for k in range(K)])


def per_model(w: Tensor, x: Tensor) -> Tensor:
    """(K,) -> (K, 1, ..., 1) broadcastable against x (K, *s)."""
    return w.view(-1, *([1] * (x.dim() - 1)))


def weighted_sum(x: Tensor, w: Tensor, scale: float = 1.0) -> Tensor:
    """scale * sum_k w_k x_k for x (K, *s), w (K,), accumulated IN PLACE into x[0] (returned).

    x is the engine's scratch block. K scaled in-place adds rather than a (K,) x (K, N) product:
    on CPU the GEMV ran at 1-1.8 G elements/s against 13-15 G/s for the adds on cache-sized
    blocks, and a fresh output per block cost a page fault per 4 KiB.
    """
    ws = [scale * v for v in w.tolist()]
    out = x[0].mul_(ws[0])
    for k in range(1, x.shape[0]):
        out.add_(x[k], alpha=ws[k])
    return out
