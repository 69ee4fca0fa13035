"""What unrolling the per-model code buys the fused TIES kernel, in one run.

``kernels.ties`` is compiled with its per-model code written out for the K models it is given
(``kernels._unrolled``). The reference here is the same formula as one loop over the tuple of
models with a runtime index, the form the kernel had before: numba indexes the tuple inside the
loop over entries, and LLVM did not vectorise it. Both run on K bfloat16 arrays of 16.8M entries
(one 4096 x 4096 projection; in memory, no file I/O), median of 7 after a warm-up call; outputs
are checked equal.

    .venv/bin/python benchmarks/merge_kernel_unroll.py
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from _timing import median_seconds  # benchmarks/_timing.py (the script's folder is on sys.path)
from transfuse.merge import kernels
from transfuse.merge.kernels import disjoint_mean, load, store

N = 1 << 24


@njit(parallel=True, nogil=True, cache=True)
def ties_runtime_loop(xs, base, thr, w, sign_weighted, normalize, scale, out):  # pragma: no cover - compiled
    """The TIES kernel as a loop over the models with a runtime index (the form before unrolling)."""
    K = len(xs)
    for i in prange(out.shape[0]):
        b = load(base, i)
        s = np.float32(0.0)
        for k in range(K):
            v = load(xs[k], i) - b
            v = np.float32(0.0) if abs(v) < thr[k] else v
            s = s + (w[k] * v if sign_weighted else v)
        sign = np.float32(-1.0) if s < 0 else np.float32(1.0)
        num = np.float32(0.0)
        den = np.float32(0.0)
        for k in range(K):
            v = load(xs[k], i) - b
            v = np.float32(0.0) if abs(v) < thr[k] else v
            agree = v * sign > 0
            num = num + (w[k] * v if agree else np.float32(0.0))
            den = den + ((w[k] if normalize == 2 else np.float32(1.0)) if agree else np.float32(0.0))
        store(out, i, b + scale * disjoint_mean(num, den, normalize))


def _bf16(v: np.ndarray) -> np.ndarray:
    return (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def main() -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(N).astype(np.float32) * 0.02
    base = _bf16(weights)
    print(f"{'models':>6} {'runtime loop ms':>16} {'unrolled ms':>12} {'speed-up':>9}")
    for K in (1, 2, 3, 5, 8):
        xs = tuple(_bf16(weights + rng.standard_normal(N).astype(np.float32) * 0.002) for _ in range(K))
        thr = np.full(K, 0.0015, np.float32)
        w = np.full(K, 1.0 / K, np.float32)
        a, b = np.empty(N, np.uint16), np.empty(N, np.uint16)
        loop = median_seconds(lambda: ties_runtime_loop(xs, base, thr, w, True, 2, np.float32(1.0), a))
        unrolled = median_seconds(lambda: kernels.ties(xs, base, thr, w, True, 2, np.float32(1.0), b, None, None))
        assert np.array_equal(a, b)
        print(f"{K:>6} {loop * 1e3:16.1f} {unrolled * 1e3:12.1f} {loop / unrolled:8.1f}x", flush=True)


if __name__ == "__main__":
    main()
