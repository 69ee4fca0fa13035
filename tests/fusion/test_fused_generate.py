"""FusedModel / fused_generate: Hugging Face's generate over K models' fused log-probs."""
import pytest
import torch

from fusion_helpers import make_tokenizer, sharp_llama
from transfuse.errors import TransfuseError
from transfuse.fusion.generate import FusedCache, FusedModel, fused_generate
from transfuse.fusion.rules import build_rule

PROMPTS = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9", "w10 w11"]


def _ids(batch=2, length=5, seed=0):
    return torch.randint(4, 40, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def naive_greedy(models, rule, ids, steps, weights):
    """The reference: re-run every model on the full prefix each step, apply the rule, take the argmax."""
    seq = ids
    for _ in range(steps):
        lps = torch.stack([torch.log_softmax(m(seq).logits[:, -1].float(), -1) for m in models])  # (K, B, V)
        nxt = build_rule(rule)(lps, torch.tensor(weights)).argmax(-1, keepdim=True)  # (B, 1)
        seq = torch.cat([seq, nxt], dim=1)
    return seq


def test_one_model_with_the_identity_rule_is_plain_generate(lms):
    ids = _ids()
    plain = lms[0].generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
    fused = FusedModel(lms[:1], "mean").generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(plain, fused)


@pytest.mark.parametrize("rule,weights", [("product", [0.5, 1.0, 0.8]), ("mean", [1.0, 2.0, 1.0])])
def test_fused_greedy_equals_the_naive_full_prefix_loop(lms, rule, weights):
    ids = _ids()
    fused = FusedModel(lms, rule, weights=weights).generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(fused, naive_greedy(lms, rule, ids, 8, weights))


def test_each_model_is_stepped_one_token_at_a_time_with_its_own_cache(lms):
    seen = {i: [] for i in range(2)}
    hooks = [m.register_forward_pre_hook(lambda mod, args, kw, i=i: seen[i].append(kw["input_ids"].shape), with_kwargs=True)
             for i, m in enumerate(lms[:2])]
    try:
        FusedModel(lms[:2], "product").generate(_ids(batch=3, length=4), max_new_tokens=5, do_sample=False, pad_token_id=0)
    finally:
        for h in hooks:
            h.remove()
    for shapes in seen.values():  # the prompt once, then one token per step for the whole batch
        assert shapes == [torch.Size([3, 4])] + [torch.Size([3, 1])] * 4


def test_cache_and_no_cache_give_the_same_tokens(lms):
    fused = FusedModel(lms[:2], "product", weights=[1.0, 0.5])
    ids = _ids(batch=3)
    with_cache = fused.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    without = fused.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0, use_cache=False)
    assert torch.equal(with_cache, without)


def test_left_padded_batch_gives_each_prompt_its_own_tokens(lms, tokenizer):
    fused = FusedModel(lms[:2], "mean")
    batched = fused_generate(fused, None, PROMPTS, tokenizer=tokenizer, max_new_tokens=6, do_sample=False, batch_size=4)
    alone = [fused_generate(fused, None, [p], tokenizer=tokenizer, max_new_tokens=6, do_sample=False)[0] for p in PROMPTS]
    assert batched == alone
    assert all(len(t.split()) == 6 or "</s>" not in t for t in batched)


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(lms, tokenizer):
    kw = dict(tokenizer=tokenizer, max_new_tokens=12, do_sample=True, top_p=0.95, temperature=1.5)
    state = torch.random.get_rng_state()
    first = fused_generate(lms[:2], "mean", PROMPTS, seed=3, **kw)
    again = fused_generate(lms[:2], "mean", PROMPTS, seed=3, **kw)
    other = fused_generate(lms[:2], "mean", PROMPTS, seed=4, **kw)
    assert first == again and first != other
    assert torch.equal(state, torch.random.get_rng_state())


def test_chat_template_and_logits_processors_come_from_hugging_face(lms, tokenizer):
    from transformers import LogitsProcessor, LogitsProcessorList

    class Ban(LogitsProcessor):
        def __init__(self, token):
            self.token = token

        def __call__(self, input_ids, scores):
            scores[:, self.token] = -float("inf")
            return scores

    fused = FusedModel(lms[:2], "product")
    kw = dict(tokenizer=tokenizer, chat_template=True, max_new_tokens=10, do_sample=False)
    free = fused_generate(fused, None, ["w1"], **kw)[0]
    templated = tokenizer.apply_chat_template([{"role": "user", "content": "w1"}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(templated, return_tensors="pt", add_special_tokens=False)["input_ids"]
    by_hand = fused.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)[0, ids.shape[1]:]
    assert free == tokenizer.decode(by_hand, skip_special_tokens=True)
    banned = tokenizer.convert_tokens_to_ids(free.split()[0])
    other = fused_generate(fused, None, ["w1"], logits_processor=LogitsProcessorList([Ban(banned)]), **kw)[0]
    assert free.split()[0] not in other.split() and other != free


def test_a_stateful_rule_gets_the_step_context(lms):
    fused = FusedModel(lms, "dlf")
    fused.generate(_ids(), max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert fused.context["step"] == 3 and fused.context["dlf_weights"].shape == (2, 1)


def test_the_cache_holds_one_cache_per_model(lms):
    out = FusedModel(lms[:3], "mean")(_ids(), use_cache=True)
    assert isinstance(out.cache if hasattr(out, "cache") else out.past_key_values, FusedCache)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    assert len(cache.caches) == 3 and cache.get_seq_length() == 5


def test_different_vocabularies_are_one_error_naming_both_tokenizers(lms, tokenizer):
    other = make_tokenizer(["<pad>", "<s>", "</s>", "<unk>"] + [f"v{i}" for i in range(36)])
    tokenizer.name_or_path, other.name_or_path = "words-a", "words-b"
    with pytest.raises(TransfuseError, match="words-a.*words-b.*different vocabularies"):
        FusedModel(lms[:2], "mean", tokenizers=[tokenizer, other])


def test_padding_rows_are_cropped_to_the_shared_tokenizer(lms, tokenizer):
    padded = sharp_llama(7, vocab=48)  # 8 padding rows past the 40-token tokenizer
    with torch.no_grad():
        padded.lm_head.weight[40:] = 0
        padded.lm_head.weight[40:, 0] = 1e3  # padding rows that would win every argmax if not cropped
    with pytest.raises(TransfuseError, match="pass their tokenizers"):
        FusedModel([lms[0], padded], "product")
    fused = FusedModel([lms[0], padded], "product", tokenizers=[tokenizer, tokenizer])
    ids = _ids()
    got = fused.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    cropped = sharp_llama(7, vocab=48)
    cropped.lm_head.weight.data = padded.lm_head.weight.data[:40].clone()
    assert got.max() < 40
    assert torch.equal(got, naive_greedy([lms[0], cropped], "product", ids, 6, [1.0, 1.0]))


def test_a_tokenizer_larger_than_a_models_output_is_an_error(lms):
    big = make_tokenizer([f"t{i}" for i in range(44)] + ["<pad>", "<s>", "</s>", "<unk>"])
    with pytest.raises(TransfuseError, match="48 tokens but model 1 has only 40"):
        FusedModel([sharp_llama(7, vocab=48), lms[0]], "mean", tokenizers=[big, big])


def test_beam_search_reorders_every_models_cache(lms):
    ids = _ids()
    kw = dict(max_new_tokens=6, do_sample=False, num_beams=3, pad_token_id=0)
    assert torch.equal(lms[0].generate(ids, **kw), FusedModel(lms[:1], "mean").generate(ids, **kw))
    fused = FusedModel(lms[:2], "product")
    assert torch.equal(fused.generate(ids, **kw), fused.generate(ids, use_cache=False, **kw))
