"""Fused merge kernels: one pass per entry from the inputs' memory maps to the output dtype.

Why numba rather than torch ops here: a torch merge makes one pass over memory per elementwise
op (a float32 copy of every input, then each op of the method; DARE's counter hash alone is 13
ops). On 2 cores that kept linear at 1.5x, DARE at 3.5x and TIES at 24x the I/O floor. These
kernels read bfloat16 / float32 entries straight from the mapped input files, do the method's
arithmetic in float32 registers and write the output dtype, so a merge is one pass over the
inputs. They implement the same formulas as the torch methods (``methods/*.py``), which stay
the reference: tests check both paths give the same merge. The engine uses a kernel only when
every input is a safetensors file of bfloat16, float16 or float32 and numba is importable
(``available()``; ``TRANSFUSE_MERGE_KERNELS=0`` switches them off); anything else takes the
torch path. Compiled kernels are cached on disk by numba (first use: a few seconds).

Conventions: ``xs`` is a tuple of K 1-D arrays (one block of each model; bfloat16 arrives as
``uint16`` bit patterns, float16 as ``int16`` ones), ``base`` a 1-D array of the same length
(length 0 when unused), ``out`` a 1-D ``uint16`` (bfloat16), ``int16`` (float16) or ``float32`` array. Arithmetic is float32 without contraction, as
torch's eager ops.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

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
SAMPLE_RUN = 64  # entries per sampled run (two cache lines of bfloat16)
SAMPLE_EVERY = 16  # one run in this many is sampled (models above SAMPLE_MIN entries; 8: per-tensor TIES 0.4 s slower on the 1B models)
SAMPLE_MIN = 1 << 20  # below this many entries per model the "sample" is everything
SAMPLE_SD = 6.0  # bracket margin in standard deviations of the sampled rank
SAMPLE_INFLATE = 8.0  # variance factor for entries sampled in runs (a design effect; a miss only costs passes)
RANGE_CHUNK = 4096  # entries per chunk of the per-thread loops (hist_range, counts, TIES): its data stays in L1
PARTS = 64  # slices of a block that prange shares out when no per-thread counts shape them
MAX_CANDIDATES = 33  # most candidate keys a candidates pass compares against (more: a range pass)
MAX_BRACKET_BINS = 16  # widest bracket counted in pass 1 (16 x 65536 counters per model and thread)


def available() -> bool:
    """numba imported, and not switched off with TRANSFUSE_MERGE_KERNELS=0 (to compare or debug)."""
    return _HAVE_NUMBA and os.environ.get("TRANSFUSE_MERGE_KERNELS", "1") != "0"


def load_numba_target_without_blas() -> None:
    """Load numba's CPU target now, with its BLAS probe failing fast: for a process that only merges.

    On its first compile or cache load numba imports its array registries, one of which imports
    ``scipy.linalg.cython_blas`` to see whether ``np.dot`` can call BLAS: 0.16 of the 0.32 s that
    costs here, in every ``transfuse merge`` command. These kernels use no BLAS. A ``None`` entry
    in ``sys.modules`` makes that import fail at once; it is removed again right after, so scipy
    imports normally later (numba's ``np.dot`` stays unavailable in this process)."""
    import sys

    if not _HAVE_NUMBA or "scipy.linalg.cython_blas" in sys.modules:
        return
    from numba.core.registry import cpu_target

    sys.modules["scipy.linalg.cython_blas"] = None  # type: ignore[assignment]
    try:
        cpu_target.target_context.refresh()
    finally:
        del sys.modules["scipy.linalg.cython_blas"]


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

    M32 = np.uint64(MASK32)

    # float16 <-> float32 by integer and float32 arithmetic (numba has no float16 on the CPU), in
    # the branch-free form of the FP16 library (M. Dukhan) that torch's c10 uses: exact and
    # round-to-nearest-even, so the fused path converts as torch does (NaN payloads aside).
    @njit(inline="always")
    def _f16_to_f32(h):
        w = np.uint64(h) << np.uint64(16)
        sign = w & np.uint64(0x80000000)
        two_w = (w + w) & M32
        normalized = _f32_from_bits((two_w >> np.uint64(4)) + np.uint64(0xE0 << 23)) * np.float32(2.0 ** -112)
        denormalized = _f32_from_bits((two_w >> np.uint64(17)) | np.uint64(126 << 23)) - np.float32(0.5)
        bits = _bits_from_f32(denormalized) if two_w < np.uint64(1 << 27) else _bits_from_f32(normalized)
        return _f32_from_bits(sign | bits)

    @njit(inline="always")
    def _f32_to_f16(f):
        base = (abs(f) * np.float32(2.0 ** 112)) * np.float32(2.0 ** -110)
        w = _bits_from_f32(f)
        shl1_w = (w + w) & M32
        sign = w & np.uint64(0x80000000)
        bias = shl1_w & np.uint64(0xFF000000)
        if bias < np.uint64(0x71000000):
            bias = np.uint64(0x71000000)
        base = _f32_from_bits((bias >> np.uint64(1)) + np.uint64(0x07800000)) + base
        bits = _bits_from_f32(base)
        nonsign = ((bits >> np.uint64(13)) & np.uint64(0x7C00)) + (bits & np.uint64(0x0FFF))
        return (sign >> np.uint64(16)) | (np.uint64(0x7E00) if shl1_w > np.uint64(0xFF000000) else nonsign)

    # (numba-level inlining of these into parallel loops fails; LLVM inlines them anyway)
    def load(arr, pos):  # pragma: no cover - replaced by the overload inside kernels
        raise NotImplementedError

    @overload(load)
    def _load(arr, pos):
        if arr.dtype == types.uint16:  # bfloat16: the high half of a float32
            return lambda arr, pos: _f32_from_bits(np.uint64(arr[pos]) << np.uint64(16))
        if arr.dtype == types.int16:  # float16 (as int16, to tell it from bfloat16)
            return lambda arr, pos: _f16_to_f32(np.uint16(arr[pos]))
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
        if dst.dtype == types.int16:
            def impl(dst, pos, val):  # round to nearest even, as torch's float -> float16
                dst[pos] = np.int16(np.uint16(_f32_to_f16(val)))
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

    # Per-model code unrolled at compile time. A kernel is compiled for a tuple of K arrays; a loop
    # over it with a runtime index (``xs[k]``) inside the loop over entries kept LLVM from
    # vectorising that loop (TIES on 16.8M entries: two models 19.0 -> 8.3 ms, five 37.1 -> 13.7
    # ms; ``benchmarks/merge_kernel_unroll.py``). numba cannot unroll a loop over a tuple of arrays of one
    # type (``literal_unroll`` is for tuples of mixed types), so the per-entry functions below
    # are written, as source, for the K they are compiled for: ``_unrolled`` repeats a per-model
    # snippet for k = 0..K-1. ``inline="always"``: a real call per entry that is passed the tuple
    # of arrays pays reference counting (measured 30x slower). Trimmed or dropped entries are
    # selected away (``x if keep else 0``), not branched around: branches kept some K from
    # vectorising (one model: 117 ms against 5 ms).

    def _unrolled(params: str, lines: list) -> "Callable":
        """The function ``impl(params)`` whose body is ``lines`` (source, already unrolled)."""
        src = "\n".join([f"def impl({params}):"] + ["    " + line for chunk in lines for line in chunk.strip("\n").split("\n")])
        scope = {"np": np, "load": load, "store": store, "_draw": _draw, "NO_DROP": NO_DROP, "disjoint_mean": disjoint_mean}
        exec(src, scope)  # noqa: S102 - our own templates, filled with model indices
        return scope["impl"]

    def weighted_entry(xs, base, coef, thr, kbase, khi, divisor, i):  # pragma: no cover - typed by its overload
        raise NotImplementedError

    @overload(weighted_entry, inline="always")
    def _weighted_entry(xs, base, coef, thr, kbase, khi, divisor, i):
        """[base +] (sum_k coef_k * keep_k * v_k) / divisor at entry i, v_k = x_k [- base]. base None:
        on the weights (linear); thr None: keep all, else DARE's keep_k = draw < thr_k (thr_k >=
        NO_DROP keeps all); the sum starts at coef_0 * v_0, as torch's (keeps -0.0)."""
        with_base = not isinstance(base, types.NoneType)
        lines = ["b = load(base, i)" if with_base else ""]
        for k in range(len(xs)):
            lines.append(f"v = load(xs[{k}], i)" + (" - b" if with_base else ""))
            if not isinstance(thr, types.NoneType):
                lines.append(f"v = np.float32(0.0) if thr[{k}] < NO_DROP and _draw(i, kbase[{k}], khi[{k}]) >= thr[{k}] else v")
            lines.append(f"acc = coef[{k}] * v" if k == 0 else f"acc = acc + coef[{k}] * v")
        lines.append("acc = acc / divisor")
        lines.append("return acc + b" if with_base else "return acc")
        return _unrolled("xs, base, coef, thr, kbase, khi, divisor, i", lines)

    def ties_run(xs, base, thr, w, sign_weighted, normalize, scale, out, c0, c1):  # pragma: no cover - typed by its overload
        raise NotImplementedError

    @overload(ties_run, inline="always")
    def _ties_run(xs, base, thr, w, sign_weighted, normalize, scale, out, c0, c1):
        """TIES over the entries [c0, c1) (unsigned): trim |tau_k| < thr_k, elect the sign of
        sum (w_k) tau_k (+1 at 0), disjoint mean of the agreeing tau_k, base + scale * it. The
        models' arrays and parameters are taken out of their tuples before the loop: indexing the
        tuple inside a loop that is not the prange itself kept it scalar (a scratch comparison: 19
        against 0.8 ms per 2M-entry block of two models). Adding 0.0 where a model disagrees equals skipping it: the
        sums never hold -0.0."""
        K = len(xs)
        head = [f"x{k} = xs[{k}]\nt{k} = thr[{k}]\nw{k} = w[{k}]\nd{k} = w{k} if normalize == 2 else np.float32(1.0)" for k in range(K)]
        body = ["b = load(base, i)", "s = np.float32(0.0)"]
        for k in range(K):
            body += [f"v{k} = load(x{k}, i) - b", f"v{k} = np.float32(0.0) if abs(v{k}) < t{k} else v{k}",
                     f"s = s + (w{k} * v{k} if sign_weighted else v{k})"]
        body += ["sign = np.float32(-1.0) if s < 0 else np.float32(1.0)", "num = np.float32(0.0)", "den = np.float32(0.0)"]
        for k in range(K):
            body += [f"agree = v{k} * sign > 0", f"num = num + (w{k} * v{k} if agree else np.float32(0.0))",
                     f"den = den + (d{k} if agree else np.float32(0.0))"]
        body.append("store(out, i, b + scale * disjoint_mean(num, den, normalize))")
        loop = ["for i in range(c0, c1):"] + ["    " + line for line in body]
        return _unrolled("xs, base, thr, w, sign_weighted, normalize, scale, out, c0, c1", head + loop)

    @njit(inline="always")
    def disjoint_mean(num, den, normalize):
        """TIES's merged delta from the agreeing sum and its count or weight (normalize 0 none,
        1 count, 2 agreeing weights)."""
        if normalize == 1:
            return num / max(den, np.float32(1.0))
        if normalize == 2:
            return num / max(den, np.float32(1e-12))
        return num

    @njit(parallel=True, nogil=True, cache=True)
    def weighted(xs, base, coef, thr, kbase, khi, divisor, out):  # pragma: no cover - compiled
        """out = [base +] (sum_k coef_k * keep_k * v_k) / divisor (``weighted_entry``): linear
        (base None), task arithmetic and DARE (thr, kbase, khi (K,) uint64; None: no drops)."""
        for i in prange(out.shape[0]):
            store(out, i, weighted_entry(xs, base, coef, thr, kbase, khi, divisor, i))

    @njit(inline="always")
    def count_run(x, base, keys, c0, c1, acc):
        """acc (M,) += the entries in [c0, c1) of |x - base| whose key is under each of keys (M,)
        uint32: per key one vectorised compare-and-add loop that recomputes the keys (cheaper
        than storing them: 8.7 against 6.1 ms on a 16.8M-entry tensor of two models)."""
        for q in range(keys.shape[0]):
            key = keys[q]
            cnt = np.uint32(0)
            for i in range(c0, c1):
                cnt += np.uint32(np.uint32(_bits_from_f32(abs(load(x, i) - load(base, i)))) < key)
            acc[q] += cnt

    @njit(parallel=True, nogil=True, cache=True)
    def ties(xs, base, thr, w, sign_weighted, normalize, scale, out, keys, below):  # pragma: no cover - compiled
        """TIES per entry (``ties_run``; normalize 0 none, 1 count, 2 agreeing weights) into out.
        With ``keys`` (K, M) uint32 (else None), also below (T, K, M) += per-thread counts of the
        entries of each |tau_k| whose key is under keys[k, q], per chunk of RANGE_CHUNK entries
        right after merging it, while it is in L1. In isolation that costs what a separate count
        pass does (``benchmarks/merge_ties_count.py``: 0.51 against 0.54 ms per 2M-entry block of
        two models); in the engine, merge plus count went from 1.18-1.43 to 0.90-0.94 s on the 1B
        per-tensor TIES merge (``benchmarks/merge_phase_times.py``, with the chunking)."""
        n = out.shape[0]
        T = below.shape[0] if below is not None else PARTS
        step = (n + T - 1) // T
        for t in prange(T):
            acc = np.zeros((len(xs), keys.shape[1] if keys is not None else 0), np.int64)
            s1 = min(n, (t + 1) * step)
            for c in range(t * step, s1, RANGE_CHUNK):
                c0 = np.uint64(c)
                c1 = np.uint64(min(c + RANGE_CHUNK, s1))
                ties_run(xs, base, thr, w, sign_weighted, normalize, scale, out, c0, c1)
                if keys is not None:
                    for k in range(len(xs)):
                        count_run(xs[k], base, keys[k], c0, c1, acc[k])
            if below is not None:
                for k in range(len(xs)):
                    for q in range(keys.shape[1]):
                        below[t, k, q] += acc[k, q]

    # The per-thread loops below index with unsigned positions (``np.uint64``): numba guards a
    # signed index against wraparound (negative indices), which kept LLVM from vectorising them
    # (hist_range: 0.026 s on a 16.8M-entry tensor of two models signed, 0.013 s unsigned and
    # chunked). prange indices are unsigned already.

    @njit(parallel=True, nogil=True, cache=True)
    def hist_low(xs, base, bins, local):  # pragma: no cover - compiled
        """local (T, K, 65536) += per-thread counts of the low 16 bits of |x_k - base| inside bin ``bins[k]``."""
        n = xs[0].shape[0]
        K = len(xs)
        T = local.shape[0]
        step = (n + T - 1) // T
        for t in prange(T):
            for i in range(t * step, min(n, (t + 1) * step)):
                p = np.uint64(i)
                b = load(base, p)
                for k in range(K):
                    u = _bits_from_f32(abs(load(xs[k], p) - b))
                    if (u >> np.uint64(16)) == bins[k]:
                        local[t, k, u & np.uint64(BINS - 1)] += 1

    @njit(parallel=True, nogil=True, cache=True)
    def hist_sample(xs, base, start, every, local):  # pragma: no cover - compiled
        """local (T, K, 65536) += per-thread counts of the top 16 bits of |x_k - base| (the order
        key of |tau|) over a sample: runs of SAMPLE_RUN entries, one run in ``every`` (1: all), by
        their position start + i in the tensor (so cutting a tensor into blocks samples the same)."""
        n = xs[0].shape[0]
        K = len(xs)
        T = local.shape[0]
        period = SAMPLE_RUN * every
        first = start // period  # the period holding the block's first entry
        nper = (start + n + period - 1) // period - first
        step = (nper + T - 1) // T
        for t in prange(T):
            for pi in range(t * step, min(nper, (t + 1) * step)):
                g0 = (first + pi) * period - start  # block index of a sampled run's first entry
                for i in range(max(g0, 0), min(g0 + SAMPLE_RUN, n)):
                    p = np.uint64(i)
                    b = load(base, p)
                    for k in range(K):
                        local[t, k, _bits_from_f32(abs(load(xs[k], p) - b)) >> np.uint64(16)] += 1

    @njit(parallel=True, nogil=True, cache=True)
    def hist_range(xs, base, lo_keys, hi_keys, below, local):  # pragma: no cover - compiled
        """Exact pass over a bracket of keys [lo_k, hi_k): below (T, K) += entries under it, and
        local (T, K, span) += counts of every key inside it (at key - lo_k).

        Counting rather than collecting the keys for a partition: differences of 16-bit weights
        take few distinct values, so a bracket can hold a tenth of a model's entries (partitioning
        those took seconds) but few distinct keys (hot counters). Per chunk of RANGE_CHUNK entries:
        the base is decoded once; per model a vectorised loop counts the keys under the bracket
        and stores every key's offset from it, then a scalar loop counts the offsets inside it."""
        n = xs[0].shape[0]
        K = len(xs)
        T = local.shape[0]
        step = (n + T - 1) // T
        for t in prange(T):
            fb = np.empty(RANGE_CHUNK, np.float32)  # the chunk's base, decoded
            offs = np.empty(RANGE_CHUNK, np.uint32)  # key - lo_k (wraps to huge under the bracket)
            under = np.zeros(K, np.int64)  # this thread's counts (a shared (T, K) array false-shares)
            s1 = min(n, (t + 1) * step)
            for c in range(t * step, s1, RANGE_CHUNK):
                c0 = np.uint64(c)
                m = np.uint64(min(RANGE_CHUNK, s1 - c))
                for j in range(m):
                    fb[j] = load(base, c0 + j)
                for k in range(K):
                    x = xs[k]
                    lo = np.uint32(lo_keys[k])
                    span = np.uint32(hi_keys[k] - lo_keys[k])
                    cnt = 0
                    for j in range(m):
                        u = np.uint32(_bits_from_f32(abs(load(x, c0 + j) - fb[j])))
                        cnt += np.int64(u < lo)
                        offs[j] = u - lo
                    under[k] += cnt
                    for j in range(m):
                        d = offs[j]
                        if d < span:
                            local[t, k, d] += 1
            for k in range(K):
                below[t, k] += under[k]


    @njit(parallel=True, nogil=True, cache=True)
    def count_below(xs, base, keys, below):  # pragma: no cover - compiled
        """below (T, K, M) += per-thread counts of the entries of |x_k - base| whose key is under
        each of ``keys[k]`` (K, M) uint32, per chunk of RANGE_CHUNK entries (in L1): ``count_run``,
        no scattered increments."""
        n = xs[0].shape[0]
        K = len(xs)
        T = below.shape[0]
        step = (n + T - 1) // T
        for t in prange(T):
            acc = np.zeros((K, keys.shape[1]), np.int64)
            s1 = min(n, (t + 1) * step)
            for c in range(t * step, s1, RANGE_CHUNK):
                for k in range(K):
                    count_run(xs[k], base, keys[k], np.uint64(c), np.uint64(min(c + RANGE_CHUNK, s1)), acc[k])
            for k in range(K):
                for q in range(keys.shape[1]):
                    below[t, k, q] += acc[k, q]


# key spacing of |a - b| for a, b of one exponent, by the kernels' array dtype: bfloat16 keeps
# 8 significant bits (low 16 key bits zero), float16 11 (low 13 zero); none for float32
CANDIDATE_STRIDE = {np.dtype(np.uint16): 1 << 16, np.dtype(np.int16): 1 << 13}

def weighted_merge(xs: tuple, base, out: np.ndarray, coef, *, divisor: float = 1.0,
                   keep: Optional[Tuple[list, list]] = None) -> None:
    """Linear / task arithmetic / DARE in one pass (see ``weighted``).

    base None: linear on the weights. keep: (thresholds, keys) per model for DARE's drops,
    threshold None = keep all; keys from ``_ops.counter_key`` with the block's start folded in.
    """
    thr = kbase = khi = None  # no drops: the kernel is compiled without them
    if keep is not None:
        K = len(xs)
        thr = np.full(K, NO_DROP, np.uint64)
        kbase = np.zeros(K, np.uint64)
        khi = np.zeros(K, np.uint64)
        for k, (t, (lo, hi)) in enumerate(zip(*keep)):
            if t is not None:
                thr[k], kbase[k], khi[k] = t, lo, hi
    weighted(xs, base, np.asarray(coef, np.float32), thr, kbase, khi, np.float32(divisor), out)


class MagnitudeSelect:
    """Exact value at ascending rank r_k of |tau_k| for each model, streamed over blocks.

    The bits of a non-negative float32 order it, so ranks can be found by counting keys. Passes,
    each over every block (``kinds`` lists them; it grows when a pass leaves the answer open):

    - ``sample``: histograms the top 16 bits of a sample (one run of 64 entries in 16; everything
      for small inputs); ``set_ranks`` turns it into a bracket of keys per model that holds the
      rank with a margin of 6 standard deviations (entries of a run may be alike: the margin uses
      8 x the sample's binomial variance).
    - ``candidates`` (16-bit inputs): counts the entries under a few keys of the bracket, with
      vectorised compares only. A difference of two 16-bit weights of one exponent is itself
      representable in 16 bits, so |tau| piles up on those keys (on the 1B benchmark one such
      key held 1.9% of a tensor's entries, the rank's). For each such key g the counts under g
      and g + 1 are taken: a rank between them is g, exactly. Otherwise the counts still narrow
      the rank to the keys between two candidates, counted by a ``range`` pass.
    - ``range`` (32-bit inputs, or after candidates missed): counts the entries below the bracket
      and every key inside it, which pins the rank down.
    - ``top``, ``low``: should a rank fall outside its bracket, the plain exact two-pass radix
      select (top 16 bits of every entry, then the low 16 bits inside the rank's bin).

    ``set_ranks(ranks, guess=True)`` (bfloat16 inputs; per-tensor TIES) skips the counting passes
    on a bet: that the rank is the key g of the sample's estimated bin with its low 16 bits zero
    (a bfloat16 value). The caller merges with g as the threshold and counts the entries under g
    and g + 1 of each merged chunk while it is in L1 (``ties(..., keys=guess, below=guess_below)``); ``verify_guess`` then
    says whether g was the rank (exact: the merge stands) or appends the passes above, after which
    the caller merges again.

    The answer is exact either way; only the number of passes depends on the data.
    The numba counterpart of ``_ops.RadixSelect(nonneg=True)``. Feed blocks with
    ``add(pass_index, xs, base, start)`` (start: flat index of the block in its tensor); works
    across tensors (global top-k). Histograms are per thread and kept here between blocks
    (allocating and reducing them per block cost ~0.5 ms a call).
    """

    def __init__(self, k: int, n: int, reuse: Optional["MagnitudeSelect"] = None) -> None:
        """``reuse``: a finished selection whose histograms this one takes over (zeroed). A merge
        selects per tensor hundreds of times; fresh 2 MB histograms and their reductions cost
        0.3 s of page faults in a new process on the 1B benchmark."""
        self.k, self.n = k, n  # models, entries per model in all
        self.every = SAMPLE_EVERY if n > SAMPLE_MIN else 1
        if reuse is not None and reuse.local.shape[1] == k:
            self.threads, self.local, self._cum = reuse.threads, reuse.local, reuse._cum
            self.local[:] = 0
        else:
            self.threads = numba.get_num_threads()
            self.local = np.zeros((self.threads, k, BINS), np.int64)
            self._cum = np.empty((k, BINS), np.int64)  # per-model cumulative histogram
        self.kinds = ["sample", "candidates"]  # the second becomes "range" for 32-bit inputs
        self.stride = 0  # key spacing of differences representable in the inputs' 16-bit dtype
        self.ranks: list = []
        self.found: Optional[np.ndarray] = None
        self.guess: Optional[np.ndarray] = None  # (K, 2) keys g, g + 1 while a guess is open

    @property
    def passes(self) -> int:
        return len(self.kinds)

    def add(self, pass_index: int, xs: tuple, base: np.ndarray, start: int = 0) -> None:
        kind = self.kinds[pass_index]
        if kind == "sample":
            self.stride = CANDIDATE_STRIDE.get(xs[0].dtype, 0)
            hist_sample(xs, base, start, self.every, self.local)
        elif kind == "candidates":
            count_below(xs, base, self.cand_keys, self.cand_below)
        elif kind == "range":
            hist_range(xs, base, self.lo_keys, self.hi_keys, self.below, self.range_local)
        elif kind == "top":
            hist_sample(xs, base, start, 1, self.local)  # every entry
        else:
            hist_low(xs, base, self.bins, self.local)

    def set_ranks(self, ranks: list, guess: bool = False) -> None:
        """After the sample: the bracket of keys holding every rank, and the next pass (or, with
        ``guess`` on bfloat16 inputs, the guessed keys; see the class docstring)."""
        self.ranks = [int(r) for r in ranks]
        cum = self._cumulative()  # (K, BINS)
        m = int(cum[0, -1])
        lo, hi, mids = [], [], []
        for k, r in enumerate(self.ranks):
            if self.every == 1:  # the sample is everything: the bin holding the rank, exactly
                b0 = b1 = mid = min(int(np.searchsorted(cum[k], r, side="right")), BINS - 1)
            else:
                q = (r + 0.5) / max(self.n, 1)
                margin = SAMPLE_SD * float(np.sqrt(SAMPLE_INFLATE * m * q * (1 - q))) + SAMPLE_RUN
                mid = min(int(np.searchsorted(cum[k], q * m, side="right")), BINS - 1)
                b0 = min(int(np.searchsorted(cum[k], max(q * m - margin, 0.0), side="right")), BINS - 1)
                b1 = min(max(int(np.searchsorted(cum[k], min(q * m + margin, m - 1), side="right")), b0), BINS - 1)
                if b1 - b0 + 1 > MAX_BRACKET_BINS:  # too wide to count: centred on the estimate (a miss falls back)
                    b0 = max(0, min(mid - MAX_BRACKET_BINS // 2, BINS - MAX_BRACKET_BINS))
                    b1 = b0 + MAX_BRACKET_BINS - 1
            lo.append(b0 << 16)
            hi.append((b1 + 1) << 16)
            mids.append(mid)
        self.guess = None
        if guess and self.stride == BINS:
            self.guess = np.array([[b << 16, (b << 16) + 1] for b in mids], np.uint32)  # (K, 2): g, g + 1
            self.guess_below = np.zeros((self.threads, self.k, 2), np.int64)
        per_bin = BINS // self.stride if self.stride else 0
        widest = max(h - l for l, h in zip(lo, hi)) >> 16
        if self.stride and 2 * per_bin * widest + 1 <= MAX_CANDIDATES:
            cands = [sorted({c for g in range(l, h, self.stride) for c in (g, g + 1)} | {h}) for l, h in zip(lo, hi)]
            width = max(len(c) for c in cands)
            self.cand_keys = np.array([c + [c[-1]] * (width - len(c)) for c in cands], np.uint32)  # (K, M)
            self.cand_below = np.zeros((self.threads, self.k, width), np.int64)
        else:
            self.kinds[1] = "range"
            self._bracket(lo, hi)
        if self.guess is not None:
            self.pending, self.kinds = self.kinds[1:], self.kinds[:1]  # run only if the guess fails

    def _cumulative(self) -> np.ndarray:
        """(K, BINS) cumulative counts of the threads' histograms, in a buffer kept between calls."""
        np.sum(self.local, axis=0, out=self._cum)
        return np.cumsum(self._cum, axis=1, out=self._cum)

    def guess_values(self) -> np.ndarray:
        """(K,) float32 guessed thresholds (while a guess is open)."""
        return self.guess[:, 0].view(np.float32).copy()

    def verify_guess(self) -> bool:
        """After every block was merged and counted: True when each guess was the rank exactly
        (ranks in [#under g, #under g + 1)); else the passes that pin the ranks follow."""
        below = self.guess_below.sum(0)
        ok = all(int(below[k, 0]) <= r < int(below[k, 1]) for k, r in enumerate(self.ranks))
        if ok:
            self.found = self.guess[:, 0].copy()
        else:
            self.kinds += self.pending
        self.guess = None
        return ok

    def _bracket(self, lo: list, hi: list) -> None:
        """Key brackets [lo_k, hi_k) for a range pass."""
        self.lo_keys = np.array(lo, np.uint64)
        self.hi_keys = np.array(hi, np.uint64)
        self.below = np.zeros((self.threads, self.k), np.int64)
        self.range_local = np.zeros((self.threads, self.k, max(h - l for l, h in zip(lo, hi))), np.int64)

    def _fall_back(self) -> None:
        """A rank outside its bracket: the plain exact radix select follows."""
        self.kinds += ["top", "low"]
        self.found = None
        self.local[:] = 0

    def finish_pass(self, pass_index: int) -> None:
        """After a pass other than the sample: the exact values, or the pass that follows."""
        kind = self.kinds[pass_index]
        if kind == "candidates":
            below = self.cand_below.sum(0)  # (K, M): entries under each candidate key
            found = np.zeros(self.k, np.uint32)
            lo, hi, open_ = [], [], False
            for k, r in enumerate(self.ranks):
                keys, cnt = self.cand_keys[k], below[k]
                if r < cnt[0] or r >= cnt[-1]:
                    return self._fall_back()
                j = int(np.searchsorted(cnt, r, side="right")) - 1  # cnt[j] <= r < cnt[j + 1]
                found[k] = keys[j]
                lo.append(int(keys[j]))
                hi.append(int(keys[j + 1]))
                open_ |= int(keys[j + 1]) != int(keys[j]) + 1
            if open_:  # some rank lies between candidates more than one key apart: count those keys
                self.kinds.append("range")
                self._bracket(lo, hi)
            else:
                self.found = found
        elif kind == "range":
            below = self.below.sum(0)
            counts = self.range_local.sum(0)  # (K, span)
            self.range_local = None
            found = np.zeros(self.k, np.uint32)
            for k, r in enumerate(self.ranks):
                inside = r - int(below[k])
                cum = counts[k].cumsum()
                if inside < 0 or inside >= int(cum[-1]):
                    return self._fall_back()
                found[k] = int(self.lo_keys[k]) + int(np.searchsorted(cum, inside, side="right"))
            self.found = found
        elif kind == "top":
            cum = self._cumulative()
            self.local[:] = 0
            self.bins = np.array([int(np.searchsorted(cum[k], r, side="right")) for k, r in enumerate(self.ranks)], np.uint64)
            self.residual = [r - (int(cum[k, int(b) - 1]) if b > 0 else 0) for k, (r, b) in enumerate(zip(self.ranks, self.bins))]
        elif kind == "low":
            cum = self._cumulative()
            low = [int(np.searchsorted(cum[k], self.residual[k], side="right")) for k in range(self.k)]
            self.found = np.array([(int(b) << 16) | lo for b, lo in zip(self.bins, low)], np.uint32)

    def values(self) -> np.ndarray:
        """(K,) float32 thresholds (after the last pass)."""
        if self.n == 0:
            return np.zeros(self.k, np.float32)
        assert self.found is not None, "values() before the selection's passes are done"
        return self.found.view(np.float32).copy()
