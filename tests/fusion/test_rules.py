"""Every registered fusion rule: the contract, then each rule against an independent formula."""
import math

import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.fusion import build_rule, rules

B, V = 4, 11
MODEL_COUNT = {"proxy": 3, "eft": 5, "dlf": 4, "contrastive": 2}


def _logprobs(k, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(scale * torch.randn(k, B, V, generator=g), dim=-1)  # (K, B, V)


@pytest.mark.parametrize("name", rules.names())
def test_output_is_normalised_log_probs(name):
    k = MODEL_COUNT.get(name, 3)
    out = build_rule(name)(_logprobs(k), torch.ones(k))
    assert out.shape == (B, V) and out.dtype == torch.float32
    assert torch.allclose(out.exp().sum(-1), torch.ones(B), atol=1e-5)


@pytest.mark.parametrize("name", rules.names())
def test_one_model_is_the_identity_where_it_should_be(name):
    rule = build_rule(name)
    if not rule.identity_for_one:
        pytest.skip(f"{name} is not the identity for one model")
    lp = _logprobs(1)
    assert torch.allclose(rule(lp, torch.ones(1)), lp, atol=1e-5)


@pytest.mark.parametrize("name", rules.names())
def test_weights_are_respected(name):
    rule = build_rule(name)
    k = MODEL_COUNT.get(name, 3)
    lp = _logprobs(k)
    if not rule.uses_weights:
        assert torch.allclose(rule(lp, torch.ones(k)), rule(lp, torch.rand(k) + 0.1))
        return
    # all the weight on model 0 pulls the fusion towards model 0
    near = rule(lp, torch.tensor([1.0] + [1e-3] * (k - 1)))
    even = rule(lp, torch.ones(k))
    kl = lambda a, b: (a.exp() * (a - b)).sum(-1).mean()  # noqa: E731
    assert kl(lp[0], near) < kl(lp[0], even)


@pytest.mark.parametrize("name", rules.names())
def test_same_models_give_the_same_distribution_back(name):
    """K copies of one distribution fuse to it (or, for rules with an order, a documented transform)."""
    rule = build_rule(name)
    k = MODEL_COUNT.get(name, 3)
    lp = _logprobs(1).expand(k, B, V)
    out = rule(lp, torch.ones(k))
    if name in ("mean", "logit_mean", "max", "eft", "proxy", "dlf"):
        assert torch.allclose(out, lp[0], atol=1e-4)


def test_mean_is_the_weighted_probability_average():
    lp, w = _logprobs(3), torch.tensor([0.2, 0.5, 0.3])
    want = (w.view(3, 1, 1) * lp.exp()).sum(0).log()
    assert torch.allclose(build_rule("mean")(lp, w * 7), want, atol=1e-6)  # weights are normalised


def test_logit_mean_and_product_are_log_linear_pools():
    lp, w = _logprobs(3), torch.tensor([1.0, 2.0, 3.0])
    geo = torch.log_softmax((w.view(3, 1, 1) * lp).sum(0), -1)
    geo_norm = torch.log_softmax((w.view(3, 1, 1) / 6 * lp).sum(0), -1)
    assert torch.allclose(build_rule("product")(lp, w), geo, atol=1e-5)
    assert torch.allclose(build_rule("logit_mean")(lp, w), geo_norm, atol=1e-5)


def test_max_keeps_the_largest_weighted_probability():
    lp, w = _logprobs(3), torch.tensor([0.5, 0.25, 0.25])
    m = (w.view(3, 1, 1) * lp.exp()).amax(0)
    assert torch.allclose(build_rule("max")(lp, torch.ones(3) * w), (m / m.sum(-1, keepdim=True)).log(), atol=1e-5)


def test_proxy_equals_the_logit_arithmetic_of_proxy_tuning():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, B, V, generator=g) * 3  # raw logits of base, expert, anti-expert
    lp = torch.log_softmax(z, -1)
    want = torch.log_softmax(z[0] + 0.7 * (z[1] - z[2]), -1)
    assert torch.allclose(build_rule("proxy", {"alpha": 0.7})(lp, torch.ones(3)), want, atol=1e-5)
    with pytest.raises(TransfuseError, match="3 models"):
        build_rule("proxy")(lp[:2], torch.ones(2))


def test_eft_with_several_signed_deltas():
    lp = _logprobs(5)
    want = torch.log_softmax(lp[0] + 1.5 * (lp[1] - lp[2]) - 0.5 * (lp[3] - lp[4]), -1)
    assert torch.allclose(build_rule("eft", {"beta": [1.5, -0.5]})(lp, torch.ones(5)), want, atol=1e-5)
    with pytest.raises(TransfuseError, match="one per pair"):
        build_rule("eft", {"beta": [1.0]})(lp, torch.ones(5))
    with pytest.raises(TransfuseError, match="odd number"):
        build_rule("eft")(lp[:4], torch.ones(4))


def test_contrastive_cuts_implausible_tokens_and_subtracts_the_amateur():
    lp = _logprobs(2)
    out = build_rule("contrastive", {"alpha": 0.2})(lp, torch.ones(2))
    plausible = lp[0].exp() >= 0.2 * lp[0].exp().amax(-1, keepdim=True)
    assert torch.isinf(out[~plausible]).all() and torch.isfinite(out[plausible]).all()
    score = torch.where(plausible, lp[0] - lp[1], torch.tensor(-math.inf))
    assert torch.allclose(out[plausible], torch.log_softmax(score, -1)[plausible], atol=1e-5)


def test_dlf_matches_each_expert_shift_in_kl():
    lp = _logprobs(4, scale=1.0)
    ctx = {}
    build_rule("dlf", {"max_weight": 10.0, "iterations": 40})(lp, torch.ones(4), ctx)
    a = ctx["dlf_weights"]  # (B, m)
    assert a.shape == (B, 2)
    large, small = lp[0], lp[1]
    for i in range(2):
        expert = lp[2 + i]
        moved = torch.log_softmax(large + a[:, i : i + 1] * (expert - small), -1)
        shift_large = (moved.exp() * (moved - large)).sum(-1)
        shift_small = (expert.exp() * (expert - small)).sum(-1)
        assert torch.allclose(shift_large, shift_small, atol=1e-4)


def test_dlf_weight_is_one_when_the_large_pair_is_the_small_pair():
    """If the large base equals the small base, the matching shift is the expert itself (a = 1)."""
    lp = _logprobs(3, scale=1.0)
    lp[0] = lp[1]
    ctx = {}
    out = build_rule("dlf", {"iterations": 40})(lp, torch.ones(3), ctx)
    assert torch.allclose(ctx["dlf_weights"], torch.ones(B, 1), atol=1e-4)
    assert torch.allclose(out, lp[2], atol=1e-4)


def test_dempster_shafer_matches_a_hand_combination_of_two_opinions():
    p1 = torch.tensor([[0.7, 0.2, 0.1]])
    p2 = torch.tensor([[0.6, 0.1, 0.3]])
    s = 10.0
    e1, e2 = s * p1, s * p2  # equal weights: each model brings `strength` evidence
    b1, u1 = e1 / (s + 3), 3 / (s + 3)
    b2, u2 = e2 / (s + 3), 3 / (s + 3)
    conflict = sum(b1[0, i] * b2[0, j] for i in range(3) for j in range(3) if i != j)
    b = (b1 * b2 + b1 * u2 + b2 * u1) / (1 - conflict)
    u = u1 * u2 / (1 - conflict)
    want = (b + u / 3).log()
    out = build_rule("dempster_shafer", {"strength": s})(torch.stack([p1, p2]).log(), torch.ones(2))
    assert torch.allclose(out, want, atol=1e-5)
    # agreement reinforces: the fused top class is more confident than either model's belief
    assert out.exp()[0, 0] > (b1 + u1 / 3)[0, 0]


def test_unknown_rule_and_bad_parameter_are_clear_errors():
    with pytest.raises(TransfuseError, match="unknown fusion-rule 'meen'.*mean"):
        build_rule("meen")
    with pytest.raises(TransfuseError, match="no parameter 'alpah'"):
        build_rule("proxy", {"alpah": 1.0})
