"""Each method against a hand example or the paper's formula written independently (numpy)."""
import math

import numpy as np
import torch

import transfuse
from transfuse.merge._ops import RadixSelect
from transfuse.merge.methods import TensorContext, methods

from merge_helpers import read_model, write_model


def merge(family, method, params=None, idx=(0, 1, 2), weights=None, base=True, **extra):
    models = []
    for j, i in enumerate(idx):
        p = {} if weights is None else {"weight": weights[j]}
        models.append({"model": str(family["paths"][f"e{i}"]), "parameters": p})
    cfg = {"method": method, "models": models, "parameters": params or {},
           "output": str(family["root"] / f"out_{method}_{len(list(family['root'].iterdir()))}"), **extra}
    if base:
        cfg["base_model"] = str(family["paths"]["base"])
    return read_model(transfuse.merge(cfg))


def call(method, x, w=None, name="t", base=None, **params):
    """Call a method directly on one stacked tensor (single block)."""
    inst = methods.get(method)(**params)
    K = x.shape[0]
    w = torch.ones(K) if w is None else torch.as_tensor(w, dtype=torch.float32)
    per = {k: [float(getattr(inst, k))] * K for k in inst.per_model_params}
    ctx = TensorContext(name, base, 0, per, {"rows": None, "shape": tuple(x.shape[1:]), "statistics": []})
    state = {}
    ctx.extra["state"] = state
    for p in range(inst.tensor_passes):
        inst.observe_tensor(p, x, w, ctx, state)
    return inst(x.clone(), w, ctx)  # methods may work in place on the engine's scratch block


def taus(family, idx=(0, 1, 2)):
    return [{k: family["experts"][i][k] - family["base"][k] for k in family["base"]} for i in idx]


def test_every_method_registered_with_a_paper_docstring():
    names = methods.names()
    for n in ["linear", "task_arithmetic", "ties", "dare", "breadcrumbs", "della", "slerp", "model_stock", "pcb", "twin", "fisher", "regmean"]:
        assert n in names
        assert methods.describe()[n]


def test_linear_weighted_average(family):
    out = merge(family, "linear", idx=(0, 1), weights=[1.0, 3.0], base=False)
    for k in family["base"]:
        ref = (family["experts"][0][k] + 3 * family["experts"][1][k]) / 4
        torch.testing.assert_close(out[k], ref)


def test_task_arithmetic(family):
    out = merge(family, "task_arithmetic", {"scale": 0.5}, weights=[1.0, 2.0, 0.5])
    t = taus(family)
    for k in family["base"]:
        ref = family["base"][k] + 0.5 * (t[0][k] + 2 * t[1][k] + 0.5 * t[2][k])
        torch.testing.assert_close(out[k], ref)


def test_ties_hand_example():
    x = torch.tensor([[3.0, -1.0, 0.5, 2.0], [-2.0, -0.2, 1.0, 1.0]])
    # per tensor, as mergekit and PEFT: the int(n * density) = 2 largest |x| (ties at the threshold kept)
    out = call("ties", x, density=0.5, topk="per_tensor")
    # trimmed: [3, 0, 0, 2] and [-2, 0, 1, 1]; signs of the sum [+, +, +, +]
    torch.testing.assert_close(out, torch.tensor([3.0, 0.0, 1.0, 1.5]))
    # mergekit's semantics: sign elected on weighted deltas, divided by the agreeing weights
    out = call("ties", x, w=[1.0, 4.0], density=0.5, topk="per_tensor", sign_from="weighted", normalize="weights")
    # weighted trimmed: [3,0,0,2] and [-8,0,4,4]; sum [-5,0,4,6] -> signs [-,+,+,+]
    torch.testing.assert_close(out, torch.tensor([-8.0 / 4.0, 0.0, 4.0 / 4.0, (2.0 + 4.0) / 5.0]))


def _np_ties_global(taus_flat, density):
    """The reference code's steps in numpy over the flattened whole models."""
    M = np.stack(taus_flat)  # (K, d)
    n, d = M.shape
    k = d - int(d * density)
    kth = np.sort(np.abs(M), axis=1)[:, k - 1 : k]
    T = M * (np.abs(M) >= kth)
    sign = np.sign(T.sum(0))
    sign[sign == 0] = 1
    agree = np.where(sign > 0, T > 0, T < 0)
    sel = T * agree
    return sel.sum(0) / np.clip((sel != 0).sum(0), 1, None)


def test_ties_global_topk_matches_reference_formula(family):
    out = merge(family, "ties", {"density": 0.3})
    t = taus(family)
    names = list(family["base"])
    flat = [np.concatenate([ti[k].numpy().ravel() for k in names]) for ti in t]
    merged = _np_ties_global(flat, 0.3)
    pos = 0
    for k in names:
        n = family["base"][k].numel()
        ref = family["base"][k].numpy().ravel() + merged[pos : pos + n]
        np.testing.assert_allclose(out[k].numpy().ravel(), ref, rtol=1e-5, atol=1e-6)
        pos += n
    # per-tensor top-k differs from the global one on the same inputs
    per = merge(family, "ties", {"density": 0.3, "topk": "per_tensor"})
    assert any(not torch.allclose(per[k], out[k]) for k in names)


def test_radix_select_exact():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5000, generator=g)
    # signed special values: infinities, signed zeros, subnormals, ties
    x[0, :8] = torch.tensor([float("-inf"), float("inf"), -0.0, 0.0, -1e-42, 1e-42, -3.0, -3.0])
    x[1, :4] = torch.tensor([-1e30, -1e-30, -2.5, -2.5])
    ranks = [0, 1, 2, 17, 2499, 2500, 4997, 4998, 4999]
    rs = RadixSelect(2)
    for c in x.split(700, 1):
        rs.add_coarse(c)
    rs.set_ranks([ranks] * 2)
    for c in x.split(700, 1):
        rs.add_fine(c)
    ref = torch.sort(x, 1).values[:, ranks]
    assert torch.equal(rs.values(), ref)
    assert torch.equal(rs.values().view(torch.int32), ref.view(torch.int32))  # -0.0 stays -0.0


def test_dare_drop_and_rescale():
    x = torch.ones(1, 200_000) * 2.0
    out = call("dare", x, density=0.25)
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 8.0))  # 2 / 0.25
    assert abs(kept.numel() / x.numel() - 0.25) < 0.01
    assert abs(float(out.mean()) - 2.0) < 0.05  # unbiased
    # L1 rescale (mergekit): the L1 norm is kept exactly
    out = call("dare", torch.randn(2, 1000, generator=torch.Generator().manual_seed(0)), density=0.3, rescale="l1", w=[1, 0])
    assert out.numel() == 1000
    # density 1 is task arithmetic
    y = torch.randn(3, 50)
    torch.testing.assert_close(call("dare", y, density=1.0), y.sum(0))
    torch.testing.assert_close(call("dare", y, density=1.0, sign="ties"), call("ties", y, density=1.0, topk="per_tensor"))


def _lowbias32_reference(seed, name, stream, idx):
    """counter_bits written again in numpy uint32 arithmetic (wrapping multiply, logical shifts)."""
    import hashlib

    key = int.from_bytes(hashlib.sha256(f"{seed}\0{name}\0{stream}".encode()).digest()[:8], "little")
    with np.errstate(over="ignore"):
        x = (idx.astype(np.uint64) + key).astype(np.uint32)
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x21F0AAAD)
        x ^= np.uint32(key >> 32)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x735A2D97)
        x ^= x >> np.uint32(15)
    return (x & np.uint32((1 << 24) - 1)).astype(np.int64)


def test_counter_bits_match_an_independent_implementation_and_are_uniform():
    from transfuse.merge._ops import counter_bits

    idx = np.arange(5_000, 105_000)
    got = counter_bits(3, "layer.weight", 1, 5_000, 100_000).numpy().copy()  # a view of a reused workspace
    assert np.array_equal(got, _lowbias32_reference(3, "layer.weight", 1, idx))
    u = got / float(1 << 24)
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.02  # neighbours independent
    other = counter_bits(3, "layer.weight", 2, 5_000, 100_000).numpy() / float(1 << 24)
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.02  # models (streams) independent
    assert not np.array_equal(got, counter_bits(4, "layer.weight", 1, 5_000, 100_000).numpy())  # the seed matters


def test_dare_l1_keeps_norm():
    x = torch.randn(1, 1000, generator=torch.Generator().manual_seed(0))
    out = call("dare", x, density=0.3, rescale="l1")
    torch.testing.assert_close(out.abs().sum(), x.abs().sum())


def test_breadcrumbs_keeps_the_middle_band():
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0, 9.0, -10.0]])
    out = call("breadcrumbs", x, density=0.5, gamma=0.1)
    # ascending |x| ranks 0..9; drop the top 1 (10), keep the next 5 (5..9)
    ref = torch.tensor([0, 0, 0, 0, 5.0, -6.0, 7.0, -8.0, 9.0, 0])
    torch.testing.assert_close(out, ref)


def test_della_eps0_equals_dare_and_prefers_large_entries():
    y = torch.randn(3, 4, 50, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(call("della", y, density=0.4, epsilon=0.0, sign="none"), call("dare", y, density=0.4))
    x = torch.linspace(0.01, 1.0, 10_000).view(1, 1, -1)
    out = call("della", x, density=0.5, epsilon=0.8, sign="none")
    kept = out != 0
    assert kept[..., -1000:].float().mean() > 0.8 and kept[..., :1000].float().mean() < 0.2
    # kept entries are rescaled by 1/p_r: expected value preserved on average
    assert abs(float(out.mean()) - float(x.mean())) < 0.02


def _np_slerp(a, b, t):
    an, bn = a / np.linalg.norm(a), b / np.linalg.norm(b)
    dot = float((an * bn).sum())
    if abs(dot) > 0.9995:
        return (1 - t) * a + t * b
    om = math.acos(dot)
    return math.sin((1 - t) * om) / math.sin(om) * a + math.sin(t * om) / math.sin(om) * b


def test_slerp(family):
    out = merge(family, "slerp", {"t": 0.3}, idx=(0, 1), base=False)
    for k in family["base"]:
        a, b = family["experts"][0][k].numpy(), family["experts"][1][k].numpy()
        np.testing.assert_allclose(out[k].numpy(), _np_slerp(a, b, 0.3), rtol=1e-4, atol=1e-5)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(call("slerp", a, t=0.5), torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))


def test_model_stock():
    base = torch.zeros(2)
    orth = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(call("model_stock", orth, base=base), torch.zeros(2))  # cos 0 -> t 0
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    torch.testing.assert_close(call("model_stock", same, base=base), torch.tensor([1.0, 2.0]))  # cos 1 -> t 1
    x = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # pairwise cos 0.5
    t = 3 * 0.5 / (1 + 2 * 0.5)
    torch.testing.assert_close(call("model_stock", x, base=torch.zeros(3)), t * x.mean(0))


def _np_pcb(M, ratio, clamp_ratio=1e-4):
    """The official PCB_merge, written again in numpy on the flattened task vectors (n, d)."""
    n, d = M.shape
    A = np.abs(M)
    s = np.sort(A, 1)
    lo, hi = s[:, int(d * clamp_ratio)][:, None], s[:, int(d * (1 - clamp_ratio) - 1)][:, None]
    Ac = np.clip(A, lo, hi)
    C = np.sign(M) * Ac
    intra = np.exp(n * ((Ac - Ac.min(1, keepdims=True)) / (Ac.max(1, keepdims=True) - Ac.min(1, keepdims=True))) ** 2)
    inter = np.tanh(M * M.sum(0))
    P = intra * inter
    sp = np.sort(P, 1)
    Pc = np.clip(P, sp[:, int(d * (1 - ratio))][:, None], sp[:, d - 1][:, None])
    S = (Pc - Pc.min(1, keepdims=True)) / (Pc.max(1, keepdims=True) - Pc.min(1, keepdims=True))
    return (C * S).sum(0) / np.clip(S.sum(0), 1e-12, None)


def test_pcb_matches_official_formula(family):
    out = merge(family, "pcb", {"ratio": 0.2, "scale": 1.2})
    t = taus(family)
    names = list(family["base"])
    M = np.stack([np.concatenate([ti[k].numpy().ravel() for k in names]) for ti in t]).astype(np.float64)
    merged = 1.2 * _np_pcb(M, 0.2)
    pos = 0
    for k in names:
        n = family["base"][k].numel()
        np.testing.assert_allclose(out[k].numpy().ravel(), family["base"][k].numpy().ravel() + merged[pos : pos + n], rtol=1e-4, atol=1e-5)
        pos += n


def test_fisher_hand_example(tmp_path):
    from transfuse.merge.stats import save_statistics

    a = write_model(tmp_path / "a", {"w": torch.tensor([0.0, 0.0])})
    b = write_model(tmp_path / "b", {"w": torch.tensor([4.0, 4.0])})
    fa = save_statistics({"w": torch.tensor([1.0, 3.0])}, tmp_path / "fa.safetensors")
    fb = save_statistics({"w": torch.tensor([3.0, 1.0])}, tmp_path / "fb.safetensors")
    out = transfuse.merge({"method": "fisher", "output": str(tmp_path / "o"), "models": [
        {"model": str(a), "parameters": {"statistics": str(fa)}}, {"model": str(b), "parameters": {"statistics": str(fb)}}]})
    torch.testing.assert_close(read_model(out)["w"], torch.tensor([3.0, 1.0]))


def test_fisher_statistics_from_hooks():
    from transfuse.merge.stats import fisher_diagonal

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(40, 3)
    F = fisher_diagonal(model, [x[:20], x[20:]], generator=torch.Generator().manual_seed(0))
    # independent: loop over samples with autograd, same sampled labels
    gen = torch.Generator().manual_seed(0)
    ref = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xb in (x[:20], x[20:]):
        with torch.no_grad():
            y = torch.multinomial(torch.softmax(model(xb), -1), 1, generator=gen).squeeze(1)
        for xi, yi in zip(xb, y):
            model.zero_grad()
            torch.log_softmax(model(xi[None]), -1)[0, yi].backward()
            for n, p in model.named_parameters():
                ref[n] += p.grad ** 2
    for n in ref:
        torch.testing.assert_close(F[n], ref[n] / 40, rtol=1e-4, atol=1e-6)


def test_regmean_equals_joint_least_squares(tmp_path):
    from transfuse.merge.stats import regmean_grams, save_statistics

    g = torch.Generator().manual_seed(0)
    paths, Xs, Ws = [], [], []
    for i in range(2):
        lin = torch.nn.Linear(4, 3)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(3, 4, generator=g))
            lin.bias.copy_(torch.randn(3, generator=g))
        X = torch.randn(30, 4, generator=g)
        grams = regmean_grams(torch.nn.Sequential(lin), [X[:10], X[10:]])
        torch.testing.assert_close(grams["0.weight"], X.T @ X, rtol=1e-5, atol=1e-4)
        paths.append((write_model(tmp_path / f"m{i}", {"0.weight": lin.weight.detach(), "0.bias": lin.bias.detach()}),
                      save_statistics(grams, tmp_path / f"g{i}.safetensors")))
        Xs.append(X)
        Ws.append(lin.weight.detach())
    out = transfuse.merge({"method": "regmean", "parameters": {"alpha": 1.0}, "output": str(tmp_path / "o"),
                           "models": [{"model": str(m), "parameters": {"statistics": str(s)}} for m, s in paths]})
    X = torch.cat(Xs).double()
    Y = torch.cat([Xs[0] @ Ws[0].T, Xs[1] @ Ws[1].T]).double()
    ref = torch.linalg.lstsq(X, Y).solution.T.float()
    merged = read_model(out)
    torch.testing.assert_close(merged["0.weight"], ref, rtol=1e-4, atol=1e-4)


def test_twin_factors_and_routed_forward(tmp_path):
    from transfuse.merge.twin_model import TwinModel, make_router

    g = torch.Generator().manual_seed(0)

    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))

    base = net()
    sd0 = {k: v.detach().clone() for k, v in base.state_dict().items()}
    experts = [{k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in sd0.items()} for _ in range(2)]
    write_model(tmp_path / "base", sd0)
    for i, e in enumerate(experts):
        write_model(tmp_path / f"e{i}", e)
    out = transfuse.merge({"method": "twin", "base_model": str(tmp_path / "base"), "output": str(tmp_path / "o"),
                           "parameters": {"shared_scale": 0.3, "rank_ratio": 1.0},
                           "models": [{"model": str(tmp_path / f"e{i}")} for i in range(2)]})
    shared = read_model(out)
    for k in sd0:
        torch.testing.assert_close(shared[k], sd0[k] + 0.3 * sum(e[k] - sd0[k] for e in experts))
    from safetensors.torch import load_file

    factors = load_file(str(out / "twin_experts.safetensors"))
    model = net()
    model.load_state_dict(shared)
    twin = TwinModel(model, factors, 2, make_router(4, 2), features=lambda m, x: x.mean((2, 3)).repeat(1, 2))
    x = torch.randn(6, 2, 4, 4, generator=g)
    route = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 3)
    y = twin(x, route=route)
    for i in range(6):
        ref_net = net()
        ref_net.load_state_dict(experts[i % 2])
        torch.testing.assert_close(y[i], ref_net(x[i : i + 1])[0], rtol=1e-4, atol=1e-4)
    # mixed routing is the linear mix of the two expert deltas, for the whole batch at once
    y_mix = twin(x, route=torch.full((6, 2), 0.5))
    assert y_mix.shape == (6, 5)
