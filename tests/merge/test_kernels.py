"""The fused numba path equals the torch reference path, block by block, and steps aside when it must."""
import numpy as np
import pytest
import torch

import transfuse
import transfuse.merge.engine as engine
from transfuse.merge import kernels
from transfuse.merge._ops import keep_rank

from merge_helpers import read_model, write_model

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

FAST_CASES = [
    ("linear", {}), ("linear", {"normalize": False}),
    ("task_arithmetic", {"scale": 0.7}), ("task_arithmetic", {"scale": 0.5, "normalize": True}),
    ("dare", {"density": 0.3}), ("dare", {"density": 0.6, "rescale": "none", "scale": 0.8}),
    ("ties", {"density": 0.3}), ("ties", {"density": 0.4, "topk": "per_tensor"}),
    ("ties", {"density": 0.5, "topk": "per_tensor", "sign_from": "weighted", "normalize": "weights"}),
    ("ties", {"density": 0.2, "normalize": "none", "scale": 0.6}),
]


@pytest.fixture(params=[torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def typed_family(request, tmp_path):
    """base + 3 experts, 16-bit or 32-bit, with exact zeros and repeated magnitudes in the deltas."""
    g = torch.Generator().manual_seed(1)
    shapes = {"embed.weight": (37, 16), "layers.0.w": (24, 16), "layers.0.b": (24,), "norm.weight": (16,), "scalar": ()}
    base = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    paths = {"base": write_model(tmp_path / "base", {k: v.to(request.param) for k, v in base.items()})}
    for i in range(3):
        t = {}
        for k, v in base.items():
            d = 0.3 * torch.randn(v.shape, generator=g)
            d[torch.rand(v.shape, generator=g) < 0.2] = 0.0  # unchanged entries, as in real fine-tunes
            t[k] = (v + d).to(request.param)
        paths[f"e{i}"] = write_model(tmp_path / f"e{i}", t, shards=2)
    return {"paths": paths, "root": tmp_path, "dtype": request.param}


def _run(fam, method, params, out, weights=(1.0, 0.7, 1.3), **extra):
    models = [{"model": str(fam["paths"][f"e{i}"]), "parameters": {"weight": w}} for i, w in enumerate(weights)]
    cfg = {"method": method, "models": models, "parameters": params, "output": str(fam["root"] / out), **extra}
    if method != "linear":
        cfg["base_model"] = str(fam["paths"]["base"])
    return read_model(transfuse.merge(cfg))


def _spy(monkeypatch):
    calls = []
    for name in ("weighted", "ties", "hist_sample"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _n=name: (calls.append(_n), _real(*a))[1])
    return calls


def _close(a, b, dtype):
    # the paths may round differently in the last bit (torch fuses multiply-adds, the kernels do not)
    tol = {torch.bfloat16: {"rtol": 2 ** -7, "atol": 1e-6}, torch.float16: {"rtol": 2 ** -10, "atol": 1e-6}}.get(dtype, {"rtol": 1e-6, "atol": 1e-7})
    torch.testing.assert_close(a.float(), b.float(), **tol)


@pytest.mark.parametrize("method,params", FAST_CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(FAST_CASES)])
def test_fused_path_equals_torch_path(typed_family, monkeypatch, method, params):
    calls = _spy(monkeypatch)
    fused = _run(typed_family, method, params, "fused")
    assert calls, "the fused kernels were not used"
    with monkeypatch.context() as m:
        m.setattr(kernels, "available", lambda: False)
        calls.clear()
        ref = _run(typed_family, method, params, "torch")
        assert not calls
    for k in ref:
        assert fused[k].dtype == ref[k].dtype and fused[k].shape == ref[k].shape
        _close(fused[k], ref[k], typed_family["dtype"])
    if method in ("linear", "dare", "ties"):  # the same entries kept / dropped: zeros agree exactly
        for k in ref:
            d_f = fused[k].float() - read_model(typed_family["paths"]["base"])[k].float() if method != "linear" else None
            if d_f is not None:
                d_r = ref[k].float() - read_model(typed_family["paths"]["base"])[k].float()
                assert torch.equal(d_f == 0, d_r == 0)


@pytest.mark.parametrize("method,params", FAST_CASES[::2], ids=[m for m, _ in FAST_CASES[::2]])
def test_fused_blocks_equal_one_block(typed_family, monkeypatch, method, params):
    whole = _run(typed_family, method, params, "whole")
    monkeypatch.setattr(engine, "FAST_ELEMS", 7)  # every tensor cut into many row blocks
    monkeypatch.setattr(engine, "KEEP_MAPPED_BYTES", 0)
    assert len(engine.row_blocks((24, 16), engine.FAST_ELEMS)) > 1
    blocks = _run(typed_family, method, params, "blocks")
    for k in whole:
        assert torch.equal(whole[k], blocks[k]), k


def test_mixed_input_dtypes_take_the_torch_path(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(8, 4, generator=g)}
    e0 = {"w": (base["w"] + 0.1).to(torch.bfloat16)}
    e1 = {"w": (base["w"] - 0.2).to(torch.float16)}  # experts of two dtypes: the kernels take one
    paths = [write_model(tmp_path / n, t) for n, t in (("b", base), ("e0", e0), ("e1", e1))]
    calls = _spy(monkeypatch)
    out = read_model(transfuse.merge({"method": "task_arithmetic", "base_model": str(paths[0]), "output": str(tmp_path / "o"),
                                      "models": [{"model": str(p)} for p in paths[1:]]}))
    assert not calls
    ref = base["w"] + (e0["w"].float() - base["w"]) + (e1["w"].float() - base["w"])
    torch.testing.assert_close(out["w"].float(), ref, rtol=1e-6, atol=1e-6)


def test_bfloat16_rounding_matches_torch_on_special_values():
    vals = np.array([0.0, -0.0, 1.0, -1.5, 3.0e38, -3.4e38, np.inf, -np.inf, np.nan, 1e-40, -1e-42,
                     1.00390625, 1.01171875, 1.0 + 2 ** -8 + 2 ** -20, 65504.0, 2 ** -126], np.float32)
    vals = np.concatenate([vals, np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 1e3])
    out = np.empty(vals.size, np.uint16)
    kernels.weighted_merge((vals,), None, out, [1.0])
    ref = torch.from_numpy(vals).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(vals)
    assert np.array_equal(out[~nan], ref[~nan])
    assert np.isnan(torch.from_numpy(out.view(np.int16)).view(torch.bfloat16).float().numpy()[nan]).all()


def test_float16_conversions_match_torch_bit_for_bit():
    """The kernels read and write float16 through integer arithmetic: every one of the 65536
    patterns reads as torch reads it, and writes round as torch rounds (halfway points, the
    neighbours of every float16, subnormals, overflow); NaN stays NaN (payloads may differ)."""
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.int16)
    read = np.empty(halves.size, np.float32)
    kernels.weighted_merge((halves,), None, read, [1.0])  # float16 in, float32 out: the read alone
    ref = torch.from_numpy(halves.copy()).view(torch.float16).float().numpy()
    nan = np.isnan(ref)
    assert np.array_equal(read[~nan].view(np.uint32), ref[~nan].view(np.uint32))
    assert np.isnan(read[nan]).all()
    f = ref[~nan]
    rng = np.random.default_rng(0)
    vals = np.concatenate([
        f, np.nextafter(f, np.float32(np.inf)), np.nextafter(f, np.float32(-np.inf)),
        ((f[:-1].astype(np.float64) + f[1:]) / 2).astype(np.float32),  # halfway: ties to even
        rng.standard_normal(100_000).astype(np.float32) * (10.0 ** rng.uniform(-9, 6, 100_000)).astype(np.float32),
        np.array([65519.99, 65520.0, 1e9, -1e9, 2.9802322e-08, 1e-10, np.nan], np.float32)])
    written = np.empty(vals.size, np.int16)
    kernels.weighted_merge((vals,), None, written, [1.0])
    ref16 = torch.from_numpy(vals).to(torch.float16).view(torch.int16).numpy()
    nan = np.isnan(vals)
    assert np.array_equal(written[~nan], ref16[~nan])
    assert np.isnan(torch.from_numpy(written[nan]).view(torch.float16).float().numpy()).all()


def _select(xs, base, ranks, cuts):
    """Run a MagnitudeSelect over the blocks ``cuts`` until it is done; (values, passes used)."""
    sel = kernels.MagnitudeSelect(len(xs), base.size)
    p = 0
    while p < sel.passes:
        for a, b in zip(cuts[:-1], cuts[1:]):
            sel.add(p, tuple(x[a:b] for x in xs), base[a:b], a)
        if p == 0:
            sel.set_ranks(ranks)
        else:
            sel.finish_pass(p)
        p += 1
    return sel.values(), sel.passes


@pytest.mark.parametrize("n", [10_001, 5_000_003], ids=["whole-sample", "sampled"])
def test_magnitude_select_is_exact_with_ties_and_zeros(n, monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.standard_normal(n).astype(np.float32)
    xs = []
    for k in range(3):
        d = np.round(rng.standard_normal(n) * 8) / 8 * (k + 1)  # many equal magnitudes, many zeros
        xs.append((base + d.astype(np.float32)).astype(np.float32))
    xs = tuple(xs)
    cuts = [0, n // 3 + 7, n]  # blocks not aligned to the sample's runs
    for density in (0.05, 0.3, 0.5, 0.99):
        ranks = [keep_rank(n, density)] * 3
        got, passes = _select(xs, base, ranks, cuts)
        ref = [np.partition(np.abs(x - base), r)[r] for x, r in zip(xs, ranks)]
        assert np.array_equal(got, np.array(ref, np.float32)), density
        assert passes == 2


def test_magnitude_select_falls_back_when_the_sample_misleads(monkeypatch):
    """A bracket that misses the rank (margin forced to nothing, a sample blind to the tail) still
    ends exact, through the two extra radix passes."""
    monkeypatch.setattr(kernels, "SAMPLE_SD", 0.0)
    monkeypatch.setattr(kernels, "SAMPLE_MIN", 1000)
    n = 200_000
    base = np.zeros(n, np.float32)
    x = np.ones(n, np.float32)
    period = kernels.SAMPLE_RUN * kernels.SAMPLE_EVERY
    sampled = (np.arange(n) % period) < kernels.SAMPLE_RUN
    x[sampled] = 0.5  # the sample sees only 0.5; 7/8 of the entries are 1.0
    got, passes = _select((x,), base, [n // 2], [0, n])
    assert passes == 4
    assert got[0] == np.partition(np.abs(x - base), n // 2)[n // 2] == 1.0


def _to_bits(v: np.ndarray, dtype) -> np.ndarray:
    """float32 values rounded to a 16-bit dtype, as the kernels' bit-pattern arrays."""
    t = torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(dtype)
    return t.view(torch.int16).numpy().view(np.uint16 if dtype == torch.bfloat16 else np.int16).copy()


def _from_bits(a: np.ndarray) -> np.ndarray:
    dtype = torch.bfloat16 if a.dtype == np.uint16 else torch.float16
    return torch.from_numpy(a.view(np.int16).copy()).view(dtype).float().numpy()


def _select_16bit(xs, base, density):
    n = base.size
    ranks = [keep_rank(n, density)] * len(xs)
    got, passes = _select(xs, base, ranks, [0, n // 3 + 5, n])
    ref = [np.partition(np.abs(_from_bits(x) - _from_bits(base)), r)[r] for x, r in zip(xs, ranks)]
    assert np.array_equal(got, np.array(ref, np.float32))
    return passes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_magnitude_select_pins_a_16bit_rank_with_candidate_counts(dtype):
    """Differences of 16-bit weights of one exponent are 16-bit values: |tau| piles up on them,
    and counting the entries under g and g + 1 for those keys g pins the rank: 2 passes, exact."""
    rng = np.random.default_rng(3)
    n = 5_000_003
    w = rng.uniform(1.0, 2.0, n).astype(np.float32)  # one exponent: the step is 2 ** -7 (bf16), 2 ** -10 (fp16)
    step = 2.0 ** (-7 if dtype == torch.bfloat16 else -10)
    base = _to_bits(w, dtype)
    xs = tuple(_to_bits(_from_bits(base) + (np.round(rng.standard_normal(n) * 3) * step * (k + 1)).astype(np.float32), dtype)
               for k in range(2))
    for density in (0.1, 0.5, 0.9):
        assert _select_16bit(xs, base, density) == 2, density


def test_magnitude_select_counts_the_keys_between_candidates():
    """Where the rank's key is not a 16-bit value (differences across exponents), the candidate
    counts narrow it to the keys between two candidates, which a range pass counts: 3 passes."""
    rng = np.random.default_rng(4)
    n = 5_000_003
    base = _to_bits(rng.uniform(1.0, 2.0, n), torch.bfloat16)
    xs = (_to_bits(rng.uniform(2.0 ** -8, 2.0 ** -7, n), torch.bfloat16),)  # |tau| ~ 1 in steps of 2 ** -15: 16 bits
    assert _select_16bit(xs, base, 0.5) == 3


def test_magnitude_select_candidates_fall_back_when_the_sample_misleads(monkeypatch):
    """bfloat16 inputs whose sample misses the rank: the candidate counts see it outside the
    bracket and the plain radix passes follow, exact."""
    monkeypatch.setattr(kernels, "SAMPLE_SD", 0.0)
    monkeypatch.setattr(kernels, "SAMPLE_MIN", 1000)
    n = 200_000
    period = kernels.SAMPLE_RUN * kernels.SAMPLE_EVERY
    sampled = (np.arange(n) % period) < kernels.SAMPLE_RUN
    base = _to_bits(np.zeros(n), torch.bfloat16)
    x = _to_bits(np.where(sampled, 0.5, 1.0), torch.bfloat16)
    got, passes = _select((x,), base, [n // 2], [0, n])
    assert passes == 4
    assert got[0] == 1.0


def _select_on_a_guess(xs, base, ranks, cuts):
    """As the per-tensor TIES merge drives it: the sample, a guess counted block by block (as
    while merging), its verdict, and the passes that follow a wrong guess; (values, verdict)."""
    sel = kernels.MagnitudeSelect(len(xs), base.size)
    blocks = [(tuple(x[a:b] for x in xs), base[a:b], a) for a, b in zip(cuts[:-1], cuts[1:])]
    for bx, bb, a in blocks:
        sel.add(0, bx, bb, a)
    sel.set_ranks(ranks, guess=True)
    assert sel.guess is not None and sel.passes == 1
    w = np.ones(len(xs), np.float32)
    for bx, bb, _ in blocks:  # merged on the guess, counted chunk by chunk as it is merged
        out = np.empty(bb.shape[0], np.float32)
        kernels.ties(bx, bb, sel.guess_values(), w, True, 2, np.float32(1.0), out, sel.guess, sel.guess_below)
    verdict = sel.verify_guess()
    p = 1
    while p < sel.passes:
        for bx, bb, a in blocks:
            sel.add(p, bx, bb, a)
        sel.finish_pass(p)
        p += 1
    return sel.values(), verdict


def test_a_guessed_bfloat16_threshold_is_verified_or_replaced():
    """Per-tensor TIES on bfloat16 merges on the sample's guess (the rank's key a bfloat16 value)
    and counts while merging: a right guess stands, a wrong one is followed by the counting
    passes; the threshold is exact either way."""
    rng = np.random.default_rng(5)
    n = 5_000_003
    cuts = [0, n // 3 + 5, n]
    base = _to_bits(rng.uniform(1.0, 2.0, n), torch.bfloat16)
    same_exponent = tuple(_to_bits(_from_bits(base) + (np.round(rng.standard_normal(n) * 3) * 2.0 ** -7 * (k + 1)).astype(np.float32),
                                   torch.bfloat16) for k in range(2))
    across = (_to_bits(rng.uniform(2.0 ** -8, 2.0 ** -7, n), torch.bfloat16),)
    for xs, expect in ((same_exponent, True), (across, False)):
        ranks = [keep_rank(n, 0.5)] * len(xs)
        got, verdict = _select_on_a_guess(xs, base, ranks, cuts)
        ref = [np.partition(np.abs(_from_bits(x) - _from_bits(base)), r)[r] for x, r in zip(xs, ranks)]
        assert np.array_equal(got, np.array(ref, np.float32))
        assert verdict is expect


def _guess_family(tmp_path, seed: int, on_grid: dict) -> dict:
    """A bfloat16 base and two experts of tensors (300 x 64, 200 x 64, ...) whose deltas are
    bfloat16 steps (``on_grid[name]``: a guessed threshold is right) or values far from the base
    (cross-exponent deltas: the guess misses)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {name: (300 - 100 * i, 64) for i, name in enumerate(on_grid)}
    base = {k: torch.rand(*s, generator=g) + 1.0 for k, s in shapes.items()}
    paths = {"base": write_model(tmp_path / "base", {k: v.bfloat16() for k, v in base.items()})}
    for i in range(2):
        ex = {k: base[k].bfloat16().float() + torch.round(torch.randn(*s, generator=g) * 3) * 2.0 ** -7 if on_grid[k]
              else torch.rand(*s, generator=g) * 2.0 ** -7 + 2.0 ** -8 for k, s in shapes.items()}
        paths[f"e{i}"] = write_model(tmp_path / f"e{i}", {k: v.bfloat16() for k, v in ex.items()})
    return {"paths": paths, "root": tmp_path, "dtype": torch.bfloat16}


def _ties_verdicts_equal_to_torch(fam, params, monkeypatch) -> list:
    """Merge with TIES fused (recording every guess's verdict) and on the torch path; the two
    merges must be equal. Returns the verdicts."""
    verdicts = []
    real = kernels.MagnitudeSelect.verify_guess
    monkeypatch.setattr(kernels.MagnitudeSelect, "verify_guess", lambda self: (verdicts.append(real(self)), verdicts[-1])[1])
    fused = _run(fam, "ties", params, "fused", weights=(1.0, 0.7))
    monkeypatch.setenv("TRANSFUSE_MERGE_KERNELS", "0")
    ref = _run(fam, "ties", params, "torch", weights=(1.0, 0.7))
    for k in ref:
        assert torch.equal(fused[k], ref[k]), k
    return verdicts


def test_per_tensor_ties_redoes_a_tensor_merged_on_a_wrong_guess(tmp_path, monkeypatch):
    """Engine: tensors whose guessed threshold proves wrong are merged again over the same output;
    the merge equals the torch path's, with right and wrong guesses both seen."""
    fam = _guess_family(tmp_path, 7, {"a": True, "b": False})
    verdicts = _ties_verdicts_equal_to_torch(fam, {"density": 0.5, "topk": "per_tensor"}, monkeypatch)
    assert sorted(verdicts) == [False, True]


@pytest.mark.parametrize("deltas", ["bfloat16 steps", "off the grid"])
def test_global_ties_merges_again_after_a_wrong_guess(tmp_path, monkeypatch, deltas):
    """Engine, global top-k on bfloat16: the whole merging pass runs on the sample's guess of the
    thresholds and counts while merging; deltas on the bfloat16 grid make the guess right, deltas
    off it make it wrong (then the counting passes run and the model is merged again into fresh
    files). Either way the merge equals the torch path's."""
    on_grid = deltas == "bfloat16 steps"
    fam = _guess_family(tmp_path, 11, {"a": on_grid, "b": on_grid})
    verdicts = _ties_verdicts_equal_to_torch(fam, {"density": 0.3, "topk": "global"}, monkeypatch)
    assert verdicts == [on_grid]


def _ties_reference(xs, base, thr, w, sign_weighted, normalize, scale):
    """The TIES kernel's per-entry formula in numpy float32, in its order of operations."""
    b = _from_bits(base)
    taus = [np.where(np.abs(_from_bits(x) - b) < t, np.float32(0), _from_bits(x) - b) for x, t in zip(xs, thr)]
    s = np.zeros_like(b)
    for tau, wk in zip(taus, w):
        s = s + (wk * tau if sign_weighted else tau)
    sign = np.where(s < 0, np.float32(-1), np.float32(1))
    num, den = np.zeros_like(b), np.zeros_like(b)
    for tau, wk in zip(taus, w):
        agree = tau * sign > 0
        num = num + np.where(agree, wk * tau, np.float32(0))
        den = den + np.where(agree, wk if normalize == 2 else np.float32(1), np.float32(0))
    r = {0: num, 1: num / np.maximum(den, np.float32(1)), 2: num / np.maximum(den, np.float32(1e-12))}[normalize]
    return b + np.float32(scale) * r


@pytest.mark.parametrize("K", [1, 2, 5])
def test_kernels_are_compiled_for_any_number_of_models(K):
    """The per-model code is unrolled for the K a kernel is compiled for: TIES, task arithmetic
    and linear equal their formulas in float32 for 1, 2 and 5 models."""
    rng = np.random.default_rng(K)
    n = 10_007
    base = _to_bits(rng.standard_normal(n), torch.bfloat16)
    xs = tuple(_to_bits(_from_bits(base) + rng.standard_normal(n).astype(np.float32) * 0.1, torch.bfloat16) for _ in range(K))
    thr = rng.uniform(0.02, 0.1, K).astype(np.float32)
    w = rng.uniform(0.5, 1.5, K).astype(np.float32)
    for sign_weighted, normalize in [(False, 1), (True, 2), (False, 0)]:
        out = np.empty(n, np.float32)
        kernels.ties(xs, base, thr, w, sign_weighted, normalize, np.float32(0.8), out, None, None)
        ref = _ties_reference(xs, base, thr, w, sign_weighted, normalize, 0.8)
        assert np.array_equal(out, ref), (sign_weighted, normalize)
    # counting while merging: entries of each |tau_k| under each of three keys
    keys = np.sort(thr.view(np.uint32)[:, None] + rng.integers(-(1 << 20), 1 << 20, (K, 3)).astype(np.int64), axis=1).astype(np.uint32)
    below = np.zeros((3, K, 3), np.int64)  # three threads' counts
    out2 = np.empty(n, np.float32)
    kernels.ties(xs, base, thr, w, True, 2, np.float32(0.8), out2, keys, below)
    tau_keys = np.abs(np.stack([_from_bits(x) - _from_bits(base) for x in xs])).view(np.uint32)  # (K, n)
    assert np.array_equal(below.sum(0), (tau_keys[:, None, :] < keys[:, :, None]).sum(-1))
    assert np.array_equal(out2, _ties_reference(xs, base, thr, w, True, 2, 0.8))
    out = np.empty(n, np.float32)
    kernels.weighted_merge(xs, base, out, w, divisor=1.5)
    acc = w[0] * (_from_bits(xs[0]) - _from_bits(base))
    for x, wk in zip(xs[1:], w[1:]):
        acc = acc + wk * (_from_bits(x) - _from_bits(base))
    assert np.array_equal(out, acc / np.float32(1.5) + _from_bits(base))
    kernels.weighted_merge(xs, None, out, w)
    acc = w[0] * _from_bits(xs[0])
    for x, wk in zip(xs[1:], w[1:]):
        acc = acc + wk * _from_bits(x)
    assert np.array_equal(out, acc)


_CLI_REPORTS_TORCH = (
    "import sys\n"
    "from transfuse.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    assert not exc.code, exc.code\n"
    "print('torch imported:', 'torch._C' in sys.modules)\n"
)


@pytest.mark.parametrize("method,params", [("linear", {}), ("dare", {"density": 0.5}), ("ties", {"density": 0.3}),
                                           ("ties", {"density": 0.3, "topk": "per_tensor"}), ("pcb", {})],
                         ids=["linear", "dare", "ties-global", "ties-per-tensor", "pcb"])
def test_a_fused_merge_never_imports_torch(typed_family, method, params):
    """torch costs ~1.4 s of start-up and exit: a merge the kernels cover must not import it
    (and one they do not cover, PCB, must import it on its own, lazily)."""
    import subprocess
    import sys

    import yaml

    fam = typed_family
    cfg = {"method": method, "base_model": str(fam["paths"]["base"]), "parameters": params,
           "models": [{"model": str(fam["paths"][f"e{i}"])} for i in range(3)], "output": str(fam["root"] / "out")}
    path = fam["root"] / "m.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([sys.executable, "-c", _CLI_REPORTS_TORCH, "merge", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"torch imported: {method == 'pcb'}" in run.stdout
    out = read_model(fam["root"] / "out")
    assert set(out) == set(read_model(fam["paths"]["base"]))
