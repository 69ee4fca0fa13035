"""How the fused merge kernels' speed depends on the input dtype, in one run.

Times the linear kernel (``kernels.weighted_merge``: three models in, the same dtype out, as the
1B benchmark's linear merge) on 16.8M-entry arrays of bfloat16, float16 and float32, and a
float16 read alone (two arrays decoded and added into float32), median of 7 after a warm-up
call. In-memory arrays: no file I/O, no page faults.

    .venv/bin/python benchmarks/merge_kernel_dtypes.py
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from _timing import median_seconds  # benchmarks/_timing.py (the script's folder is on sys.path)
from transfuse.merge import kernels
from transfuse.merge.kernels import load

N = 1 << 24  # one 4096 x 4096 projection


@njit(parallel=True, cache=True)
def _read_two(a, b, out):  # pragma: no cover - compiled
    for i in prange(a.shape[0]):
        out[i] = load(a, i) + load(b, i)


def main() -> None:
    rng = np.random.default_rng(0)
    values = [(rng.standard_normal(N) * 0.02).astype(np.float32) for _ in range(3)]
    arrays = {
        "bfloat16": tuple((v.view(np.uint32) >> 16).astype(np.uint16) for v in values),
        "float16": tuple(v.astype(np.float16).view(np.int16) for v in values),
        "float32": tuple(values),
    }
    print(f"{'dtype':12} {'linear kernel s':>16} {'vs bfloat16':>12}")
    base = None
    for name, xs in arrays.items():
        out = np.empty(N, xs[0].dtype)
        s = median_seconds(lambda xs=xs, out=out: kernels.weighted_merge(xs, None, out, [0.4, 0.3, 0.3]))
        base = base or s
        print(f"{name:12} {s:16.4f} {s / base:11.2f}x")
    out = np.empty(N, np.float32)
    read = median_seconds(lambda: _read_two(*arrays["float16"][:2], out))
    print(f"float16 read of both arrays alone (no merge): {read:.4f} s")


if __name__ == "__main__":
    main()
