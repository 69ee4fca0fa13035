"""Fused merge kernels: one pass per entry from the inputs' memory maps to the output dtype.

Why numba rather than torch ops here: a torch merge makes one pass over memory per elementwise
op (a float32 copy of every input, then each op of the method; DARE's counter hash alone is 13
ops). On 2 cores that kept linear at 1.5x, DARE at 3.5x and TIES at 24x the I/O floor. These
kernels read bfloat16 / float32 entries straight from the mapped input files, do the method's
arithmetic in float32 registers and write the output dtype, so a merge is one pass over the
inputs. They implement the same formulas as the torch methods (``methods/*.py``), which stay
the reference: tests check both paths give the same merge. The engine uses a kernel only when
every input is a safetensors file of bfloat16 or float32 and numba is importable
(``available()``; ``TRANSFUSE_MERGE_KERNELS=0`` switches them off); anything else takes the
torch path. Compiled kernels are cached on disk by numba (first use: a few seconds).

Conventions: ``xs`` is a tuple of K 1-D arrays (one block of each model; bfloat16 arrives as
``uint16`` bit patterns), ``base`` a 1-D array of the same length (length 0 when unused), ``out``
a 1-D ``uint16`` (bfloat16) or ``float32`` array. Arithmetic is float32 without contraction, as
torch's eager ops.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

try:  # numba is a dependency, but a broken install must not break merging: the torch path remains
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.extending import intrinsic, overload

    _HAVE_NUMBA = True
except Exception:  # noqa: BLE001 - any import failure means "no kernels"
    _HAVE_NUMBA = False

MASK32 = 0xFFFFFFFF
M1, M2 = 0x21F0AAAD, 0x735A2D97  # lowbias32 multipliers, as _ops.counter_bits
NO_DROP = 1 << 24  # a keep threshold meaning "keep every entry"
BINS = 1 << 16


def available() -> bool:
    """numba imported, and not switched off with TRANSFUSE_MERGE_KERNELS=0 (to compare or debug)."""
    return _HAVE_NUMBA and os.environ.get("TRANSFUSE_MERGE_KERNELS", "1") != "0"


if _HAVE_NUMBA:

    @intrinsic
    def _f32_from_bits(typingctx, u):
        """Reinterpret a uint32 bit pattern as float32."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())

        return types.float32(u), codegen

    @intrinsic
    def _bits_from_f32(typingctx, f):
        """Reinterpret a float32 as its uint32 bit pattern."""
        def codegen(context, builder, signature, args):
            return builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))

        return types.uint64(f), codegen

    # (numba-level inlining of these into parallel loops fails; LLVM inlines them anyway)
    def load(arr, pos):  # pragma: no cover - replaced by the overload inside kernels
        raise NotImplementedError

    @overload(load)
    def _load(arr, pos):
        if arr.dtype == types.uint16:  # bfloat16: the high half of a float32
            return lambda arr, pos: _f32_from_bits(np.uint64(arr[pos]) << np.uint64(16))
        if arr.dtype == types.float32:
            return lambda arr, pos: arr[pos]
        return None

    def store(dst, pos, val):  # pragma: no cover
        raise NotImplementedError

    @overload(store)
    def _store(dst, pos, val):
        if dst.dtype == types.uint16:
            def impl(dst, pos, val):  # round to nearest even, as torch's float -> bfloat16
                if val != val:
                    dst[pos] = np.uint16(0x7FC0)
                else:
                    bits = _bits_from_f32(val)
                    dst[pos] = np.uint16((bits + ((bits >> np.uint64(16)) & np.uint64(1)) + np.uint64(0x7FFF)) >> np.uint64(16))
            return impl
        if dst.dtype == types.float32:
            def impl(dst, pos, val):
                dst[pos] = val
            return impl
        return None

    @njit(inline="always")
    def _draw(entry, kbase, khi):
        """counter_bits for an entry: the lowbias32 hash of (entry + key low) with key high mixed in."""
        m = np.uint64(MASK32)
        x = (np.uint64(entry) + kbase) & m
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(M1)) & m
        x ^= khi
        x ^= x >> np.uint64(15)
        x = (x * np.uint64(M2)) & m
        x ^= x >> np.uint64(15)
        return x & np.uint64(NO_DROP - 1)

    @njit(parallel=True, nogil=True, cache=True)
    def weighted(xs, base, coef, thr, kbase, khi, divisor, with_base, out):  # pragma: no cover - compiled
        """out = [base +] (sum_k coef_k * keep_k * v_k) / divisor, v_k = x_k [- base].

        Linear (with_base False), task arithmetic and DARE (keep_k: draw < thr_k; thr_k >= 2**24
        keeps all). coef (K,) f32; thr, kbase, khi (K,) uint64; divisor f32.
        """
        n = out.shape[0]
        K = len(xs)
        for i in prange(n):
            b = load(base, i) if with_base else np.float32(0.0)
            acc = np.float32(0.0)
            for k in range(K):
                v = load(xs[k], i)
                if with_base:
                    v = v - b
                if thr[k] < np.uint64(NO_DROP) and _draw(i, kbase[k], khi[k]) >= thr[k]:
                    v = np.float32(0.0)
                acc = coef[k] * v if k == 0 else acc + coef[k] * v  # (x0 * c0 first, as torch: keeps -0.0)
            acc = acc / divisor
            if with_base:
                acc = acc + b
            store(out, i, acc)

    @njit(parallel=True, nogil=True, cache=True)
    def ties(xs, base, thr, w, sign_weighted, normalize, scale, out):  # pragma: no cover - compiled
        """TIES per entry: trim |tau_k| < thr_k, elect the sign of sum (w_k) tau_k (+1 at 0), mean
        of the agreeing entries (normalize 0 none, 1 count, 2 agreeing weights), base + scale * it.
        """
        n = out.shape[0]
        K = len(xs)
        for i in prange(n):
            b = load(base, i)
            s = np.float32(0.0)
            for k in range(K):
                v = load(xs[k], i) - b
                if abs(v) < thr[k]:
                    v = np.float32(0.0)
                s = s + (w[k] * v if sign_weighted else v)
            sign = np.float32(-1.0) if s < 0 else np.float32(1.0)
            num = np.float32(0.0)
            den = np.float32(0.0)
            for k in range(K):
                v = load(xs[k], i) - b
                if abs(v) < thr[k]:
                    v = np.float32(0.0)
                if v * sign > 0:
                    num = num + w[k] * v
                    den = den + (w[k] if normalize == 2 else np.float32(1.0))
            if normalize == 1:
                r = num / max(den, np.float32(1.0))
            elif normalize == 2:
                r = num / max(den, np.float32(1e-12))
            else:
                r = num
            store(out, i, b + scale * r)

    @njit(parallel=True, nogil=True, cache=True)
    def hist_high(xs, base, hist, T):  # pragma: no cover - compiled
        """hist (K, 65536) += counts of the top 16 bits of |x_k - base| (order key of |tau|); T threads."""
        n = xs[0].shape[0]
        K = len(xs)
        local = np.zeros((T, K, BINS), np.int64)
        step = (n + T - 1) // T
        for t in prange(T):
            for i in range(t * step, min(n, (t + 1) * step)):
                b = load(base, i)
                for k in range(K):
                    local[t, k, _bits_from_f32(abs(load(xs[k], i) - b)) >> np.uint64(16)] += 1
        hist += local.sum(axis=0)

    @njit(parallel=True, nogil=True, cache=True)
    def hist_low(xs, base, bins, hist, T):  # pragma: no cover - compiled
        """hist (K, 65536) += counts of the low 16 bits of |x_k - base| inside bin ``bins[k]``."""
        n = xs[0].shape[0]
        K = len(xs)
        local = np.zeros((T, K, BINS), np.int64)
        step = (n + T - 1) // T
        for t in prange(T):
            for i in range(t * step, min(n, (t + 1) * step)):
                b = load(base, i)
                for k in range(K):
                    u = _bits_from_f32(abs(load(xs[k], i) - b))
                    if (u >> np.uint64(16)) == bins[k]:
                        local[t, k, u & np.uint64(BINS - 1)] += 1
        hist += local.sum(axis=0)


_EMPTY = {np.dtype(np.uint16): np.zeros(0, np.uint16), np.dtype(np.float32): np.zeros(0, np.float32)}


def weighted_merge(xs: tuple, base, out: np.ndarray, coef, *, divisor: float = 1.0,
                   keep: Optional[Tuple[list, list]] = None) -> None:
    """Linear / task arithmetic / DARE in one pass (see ``weighted``).

    base None: linear on the weights. keep: (thresholds, keys) per model for DARE's drops,
    threshold None = keep all; keys from ``_ops.counter_key`` with the block's start folded in.
    """
    K = len(xs)
    thr = np.full(K, NO_DROP, np.uint64)
    kbase = np.zeros(K, np.uint64)
    khi = np.zeros(K, np.uint64)
    if keep is not None:
        for k, (t, (lo, hi)) in enumerate(zip(*keep)):
            if t is not None:
                thr[k], kbase[k], khi[k] = t, lo, hi
    with_base = base is not None
    b = base if with_base else _EMPTY[xs[0].dtype]
    weighted(xs, b, np.asarray(coef, np.float32), thr, kbase, khi, np.float32(divisor), with_base, out)


class MagnitudeSelect:
    """Exact value at ascending rank r_k of |tau_k| for each model, from two histogram passes.

    The numba counterpart of ``_ops.RadixSelect(nonneg=True)``: the bits of a non-negative float32
    order it, so pass 1 counts the top 16 bits, pass 2 the low 16 bits inside the bin holding the
    rank. Feed it blocks with ``add(pass_index, xs, base)``; works across tensors (global top-k).
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.high = np.zeros((k, BINS), np.int64)
        self.low = np.zeros((k, BINS), np.int64)
        self.count = 0
        self.bins = None
        self.residual = None

    def add(self, pass_index: int, xs: tuple, base: np.ndarray) -> None:
        threads = numba.get_num_threads()
        if pass_index == 0:
            hist_high(xs, base, self.high, threads)
            self.count += xs[0].shape[0]
        else:
            hist_low(xs, base, self.bins, self.low, threads)

    def set_ranks(self, ranks: list) -> None:
        cum = self.high.cumsum(1)  # (K, BINS)
        self.bins = np.array([int(np.searchsorted(cum[k], r, side="right")) for k, r in enumerate(ranks)], np.uint64)
        before = [int(cum[k, int(b) - 1]) if b > 0 else 0 for k, b in enumerate(self.bins)]
        self.residual = [r - bf for r, bf in zip(ranks, before)]

    def values(self) -> np.ndarray:
        """(K,) float32 thresholds."""
        if self.count == 0:
            return np.zeros(self.k, np.float32)
        cum = self.low.cumsum(1)
        low = [int(np.searchsorted(cum[k], self.residual[k], side="right")) for k in range(self.k)]
        keys = np.array([(int(b) << 16) | lo for b, lo in zip(self.bins, low)], np.uint32)
        return keys.view(np.float32)
