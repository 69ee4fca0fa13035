"""What counting a guessed TIES threshold inside the merge kernel buys, in one run.

Per-tensor and global TIES on bfloat16 merge on a guessed threshold g and must count, for every
model, the entries of |tau| under g and g + 1 (``kernels.MagnitudeSelect.verify_guess``). Two
ways, on 2M-entry blocks of two models (the engine's block size; eight different blocks in
turn so that they come from memory, not cache), median of 7 after a warm-up:

- merge, then count: ``kernels.ties`` without keys, then ``kernels.count_below`` over the block;
- counted while merging: ``kernels.ties`` with the keys, each 4096-entry chunk counted right
  after it is merged, while it is in L1 (what the engine runs).

Outputs and counts are checked equal.

    .venv/bin/python benchmarks/merge_ties_count.py
"""
from __future__ import annotations

import numpy as np

from _timing import median_seconds  # benchmarks/_timing.py (the script's folder is on sys.path)
from transfuse.merge import kernels

N = 1 << 21  # entries per model in one block (engine.FAST_ELEMS)
BLOCKS = 8


def _bf16(v: np.ndarray) -> np.ndarray:
    return (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def main() -> None:
    rng = np.random.default_rng(0)
    K, T = 2, kernels.numba.get_num_threads()
    weights = [rng.standard_normal(N).astype(np.float32) * 0.02 for _ in range(BLOCKS)]
    bases = [_bf16(wt) for wt in weights]
    xss = [tuple(_bf16(wt + rng.standard_normal(N).astype(np.float32) * 0.002) for _ in range(K)) for wt in weights]
    g = np.uint32(np.float32(0.0015).view(np.uint32) >> 16 << 16)
    keys = np.array([[g, g + 1]] * K, np.uint32)  # (K, 2): g and g + 1, as a guess
    thr = keys[:, 0].view(np.float32).copy()
    w = np.full(K, 0.5, np.float32)
    out_a, out_b = np.empty(N, np.uint16), np.empty(N, np.uint16)
    below_a, below_b = np.zeros((T, K, 2), np.int64), np.zeros((T, K, 2), np.int64)

    def separate():
        for xs, base in zip(xss, bases):
            kernels.ties(xs, base, thr, w, True, 2, np.float32(1.0), out_a, None, None)
            kernels.count_below(xs, base, keys, below_a)

    def counted():
        for xs, base in zip(xss, bases):
            kernels.ties(xs, base, thr, w, True, 2, np.float32(1.0), out_b, keys, below_b)

    def merge_only():
        for xs, base in zip(xss, bases):
            kernels.ties(xs, base, thr, w, True, 2, np.float32(1.0), out_a, None, None)

    separate(), counted()
    below_a[:], below_b[:] = 0, 0
    separate(), counted()
    assert np.array_equal(out_a, out_b) and np.array_equal(below_a.sum(0), below_b.sum(0))
    t_sep, t_cnt, t_merge = (median_seconds(f) / BLOCKS for f in (separate, counted, merge_only))
    print(f"per 2M-entry block of {K} models: merge only {t_merge * 1e3:.2f} ms; merge, then count "
          f"{t_sep * 1e3:.2f} ms; counted while merging {t_cnt * 1e3:.2f} ms ({t_sep / t_cnt:.2f}x)")


if __name__ == "__main__":
    main()
