"""An ensemble of causal-LM teachers in `task: lm` recipes: fused per position, live or as one top-k cache."""
import pytest
import torch

from lm_helpers import make_llama, make_tokenizer


def _folders(tmp_path, seeds=(1, 2)):
    out = []
    for s in seeds:
        folder = tmp_path / f"teacher{s}"
        make_llama(layers=2, seed=s).save_pretrained(folder)
        make_tokenizer().save_pretrained(folder)
        out.append(folder)
    return out


def _cfg(tmp_path, folders, *, cache, rule="mean", weights=None):
    from transfuse.recipes.distill_lm import LMConfig

    (tmp_path / "text.txt").write_text("\n\n".join(" ".join(f"w{(i * 7 + j) % 32}" for j in range(30)) for i in range(8)))
    return LMConfig.model_validate({
        "teacher": {"ensemble": [{"path": str(f)} for f in folders], "rule": rule, "weights": weights,
                    "cache": cache, "cache_dir": str(tmp_path / "cache"), "top_k": 40},
        "student": {"layers": 1},
        "data": {"source": str(tmp_path / "text.txt"), "seq_len": 8, "batch_size": 4},
        "objective": {"name": "forward_kl"},
        "train": {"max_steps": 2, "device": "cpu"},
        "eval": {"samples": 2, "new_tokens": 3, "prompt_tokens": 2},
    })


def _batch(prepared):
    from transfuse.signals import as_batch

    return as_batch(prepared.train_data.__getitems__([0, 1]))


def _members_mean(folders, batch):
    from transformers import AutoModelForCausalLM

    probs = []
    for f in folders:
        m = AutoModelForCausalLM.from_pretrained(str(f)).eval()
        with torch.no_grad():
            probs.append(m(input_ids=batch.inputs, attention_mask=batch.extra["attention_mask"]).logits.softmax(-1))
    return (probs[0] + probs[1]) / 2  # (B, T, V)


def test_live_ensemble_teacher_is_the_mean_of_its_members_per_token(tmp_path):
    from transfuse.recipes.distill_lm import Prepared

    folders = _folders(tmp_path)
    prepared = Prepared(_cfg(tmp_path, folders, cache=False), log=lambda *_: None)
    batch = _batch(prepared)
    fused = prepared.teacher_source(batch).logits  # (B, T, V) log-probs
    assert fused.shape == (2, 8, 40)
    assert torch.allclose(fused.exp(), _members_mean(folders, batch), atol=1e-5)
    metrics = prepared.run("forward_kl", {}, seed=0, log=lambda *_: None)
    assert metrics["steps"] == 2 and torch.isfinite(torch.tensor(metrics["teacher_nll"]))


@pytest.mark.slow
def test_cached_ensemble_teacher_stores_the_fused_distribution(tmp_path):
    from transfuse.recipes.distill_lm import Prepared

    folders = _folders(tmp_path)
    prepared = Prepared(_cfg(tmp_path, folders, cache=True), log=lambda *_: None)
    batch = _batch(prepared)
    out = prepared.teacher_source(batch)  # top-40 of 40 tokens: the whole fused distribution
    dense = torch.full((2, 8, 40), float("-inf")).scatter(-1, out.topk_indices.long(), out.topk_logprobs.float())
    keep = batch.mask.bool()  # the cache holds counted positions only, in half precision
    assert torch.allclose(dense.exp()[keep], _members_mean(folders, batch)[keep], rtol=1e-2, atol=1e-4)
    assert prepared.run("forward_kl", {}, seed=0, log=lambda *_: None)["steps"] == 2
    # another rule is another teacher: a new cache folder, not the stale one
    Prepared(_cfg(tmp_path, folders, cache=True, rule="product"), log=lambda *_: None)
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2


def test_ensemble_members_need_one_vocabulary_and_matching_weights(tmp_path):
    from transfuse.errors import TransfuseError
    from transfuse.recipes.distill_lm import Prepared

    folders = _folders(tmp_path)
    with pytest.raises(TransfuseError, match="1 weights were given for 2 models"):
        Prepared(_cfg(tmp_path, folders, cache=False, weights=[1.0]), log=lambda *_: None)
    other = tmp_path / "other"
    make_llama(vocab=41, layers=1).save_pretrained(other)
    make_tokenizer().save_pretrained(other)
    with pytest.raises(TransfuseError, match="one vocabulary"):
        Prepared(_cfg(tmp_path, [folders[0], other], cache=False), log=lambda *_: None)
