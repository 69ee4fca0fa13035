"""transfuse's merge methods against PEFT 0.21.2 ``merge_utils`` (references: scripts/peft_references.py)."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from transfuse.merge.methods import TensorContext, methods

REFS = Path(__file__).parent / "peft_refs" / "merge_utils.safetensors"


def _load():
    with safe_open(str(REFS), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["cases"])


TENSORS, CASES = _load()


def transfuse_call(case: str, masks=None, seed: int = 0) -> torch.Tensor:
    """The transfuse call that reproduces PEFT's function named by ``case`` ('fn/input/density/sign')."""
    fn, name, *rest = case.split("/")
    x, w = TENSORS[f"x/{name}"].clone(), TENSORS["w"]
    d = float(rest[0]) if rest else 1.0
    sm = rest[1] if len(rest) > 1 else "total"
    method, params = {
        "task_arithmetic": ("task_arithmetic", {}),
        "magnitude_prune": ("magnitude_prune", {"density": d}),
        "ties": ("ties", {"density": d, "topk": "exact", "sign_method": sm}),
        "dare_linear": ("dare", {"density": d}),
        "dare_ties": ("dare", {"density": d, "sign": "ties", "sign_method": sm}),
    }[fn]
    inst = methods.get(method)(**params)
    per = {k: [float(getattr(inst, k))] * x.shape[0] for k in inst.per_model_params}
    ctx = TensorContext("t", None, 0, per, {"rows": None, "shape": tuple(x.shape[1:])}, seed=seed)
    if masks is not None:  # PEFT's own Bernoulli draws in place of transfuse's counter-based ones
        ctx.random_keep = lambda k, n, p: masks[k].reshape(-1)
    return inst(x, w, ctx)


@pytest.mark.parametrize("case", CASES)
def test_matches_peft(case):
    masks = TENSORS.get(f"mask/{case}")
    out = transfuse_call(case, masks)
    assert (out - TENSORS[case]).abs().max().item() <= 1e-6, case


def test_tied_inputs_need_peft_tie_rule():
    """On the 'tied' input a threshold rule (``topk="per_tensor"``) keeps more entries than PEFT; ``"exact"`` does not."""
    x = TENSORS["x/tied"]
    n = x[0].numel()
    kth = x[0].abs().reshape(-1).topk(int(0.2 * n)).values[-1]
    assert int((x[0].abs() >= kth).sum()) > int(0.2 * n)  # ties straddle the threshold
    ref = TENSORS["ties/tied/0.2/total"]
    inst = methods.get("ties")(density=0.2, topk="per_tensor")
    ctx = TensorContext("t", None, 0, {"density": [0.2] * 3}, {"rows": None, "shape": tuple(x.shape[1:]), "state": {}})
    assert (inst(x.clone(), TENSORS["w"], ctx) - ref).abs().max() > 1e-3
    assert (transfuse_call("ties/tied/0.2/total") - ref).abs().max() <= 1e-6


def test_engine_merges_peft_modes_whole_tensors(family):
    """Through ``transfuse.merge``: exact top-k per whole tensor (PEFT's formula written out here)."""
    import transfuse
    from merge_helpers import read_model

    models = [{"model": str(family["paths"][f"e{i}"]), "parameters": {"weight": wt}} for i, wt in enumerate([0.5, 1.0, 2.0])]
    for method, params in [("magnitude_prune", {"density": 0.3}),
                           ("ties", {"density": 0.3, "topk": "exact", "sign_method": "frequency"})]:
        out = read_model(transfuse.merge({"method": method, "models": models, "parameters": params,
                                          "base_model": str(family["paths"]["base"]),
                                          "output": str(family["root"] / f"out_{method}")}))
        w = torch.tensor([0.5, 1.0, 2.0])
        for k, b in family["base"].items():
            tau = torch.stack([e[k] - b for e in family["experts"]]).reshape(3, -1)  # (3, n)
            kk = int(0.3 * tau.shape[1])
            keep = torch.zeros_like(tau).scatter_(1, tau.abs().topk(kk, dim=1).indices, 1.0)
            tau = tau * keep
            if method == "ties":
                maj = torch.where(tau.sign().sum(0) >= 0, 1.0, -1.0)
                agree = (tau.sign() == maj).float()
                merged = (w[:, None] * tau * agree).sum(0) / agree.sum(0).clamp(min=1)
            else:
                merged = (w[:, None] * tau).sum(0)
            torch.testing.assert_close(out[k], b + merged.reshape(b.shape), atol=1e-6, rtol=0)


def test_frequency_differs_from_total_on_these_inputs():
    assert not torch.equal(TENSORS["majority_sign_mask/dense/frequency"], TENSORS["majority_sign_mask/dense/total"])
    a, b = TENSORS["ties/dense/0.5/frequency"], TENSORS["ties/dense/0.5/total"]
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(transfuse_call("ties/dense/0.5/frequency"), a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("density", [0.3, 0.7])
def test_dare_statistics_with_transfuse_draws(density):
    """transfuse's own (counter-based) DARE draws: kept fraction ~ density, mean over seeds ~ task arithmetic."""
    x = TENSORS["x/dense"]
    n = x[0].numel()
    ctx = TensorContext("t", None, 0, {"density": [density] * 3}, {}, seed=5)
    kept = torch.stack([ctx.random_keep(k, n, density).clone() for k in range(3)])  # (3, n)
    sd = (density * (1 - density) / (3 * n)) ** 0.5
    assert abs(kept.mean().item() - density) < 4 * sd
    runs = torch.stack([transfuse_call(f"dare_linear/dense/{density}/total", seed=s) for s in range(200)])
    ta = TENSORS["task_arithmetic/dense"]
    # per entry: sd of the mean of 200 draws of sum_k w_k x_k b_k / d
    var = ((TENSORS["w"].view(3, 1, 1) * x) ** 2).sum(0) * (1 - density) / density / 200
    z = (runs.mean(0) - ta) / var.sqrt().clamp(min=1e-6)
    assert z.abs().mean() < 1.0 and z.abs().max() < 6.0


@pytest.mark.parametrize("sign_method", ["total", "frequency"])
@pytest.mark.parametrize("name", ["dense", "tied"])
def test_majority_sign_mask(name, sign_method):
    from transfuse.merge._peft import majority_sign

    x = TENSORS[f"x/{name}"]
    mask = (x.sign() == majority_sign(x, sign_method)).float()  # PEFT's calculate_majority_sign_mask
    assert torch.equal(mask, TENSORS[f"majority_sign_mask/{name}/{sign_method}"])
