"""Teacher-forced fused log-probs: the rule applied per position on every model's full-sequence pass."""
import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.fusion.generate import fused_logprobs
from transfuse.fusion.rules import build_rule


def _ids(batch=2, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 40, (batch, length), generator=g)


def test_one_model_with_the_identity_rule_is_the_models_own_log_softmax(lms):
    ids = _ids()
    got = fused_logprobs(lms[:1], "mean", ids)
    want = torch.log_softmax(lms[0](ids).logits.float(), -1)
    assert got.shape == (2, 6, 40)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rule", ["product", "mean", {"name": "product"}])
def test_two_models_equal_the_rule_on_their_stacked_log_probs(lms, rule):
    ids = _ids()
    got = fused_logprobs(lms[:2], rule, ids, weights=[0.3, 0.7])
    stacked = torch.stack([torch.log_softmax(m(ids).logits.float(), -1) for m in lms[:2]])  # (2, B, T, V)
    name = rule if isinstance(rule, str) else rule["name"]
    want = torch.stack([build_rule(name)(stacked[:, :, t], torch.tensor([0.3, 0.7])) for t in range(6)], dim=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_left_padding_leaves_the_real_positions_unchanged(lms):
    ids = _ids(batch=1, length=5)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 5, dtype=torch.long)], dim=1)
    alone = fused_logprobs(lms[:2], "product", ids)
    batched = fused_logprobs(lms[:2], "product", padded, mask)
    torch.testing.assert_close(batched[:, 3:], alone, atol=1e-4, rtol=1e-4)


def test_wrong_model_count_for_the_rule_is_one_clear_error(lms):
    with pytest.raises(TransfuseError, match="base, expert, anti-expert"):
        fused_logprobs(lms[:2], "proxy", _ids())


def test_weights_must_match_the_models(lms):
    with pytest.raises(TransfuseError, match="2 weights were given for 3 models"):
        fused_logprobs(lms, "product", _ids(), weights=[1.0, 1.0])


def test_the_entry_points_are_exported_lazily():
    import transfuse
    from transfuse.fusion import generate

    assert transfuse.fused_generate is generate.fused_generate and transfuse.FusedModel is generate.FusedModel
