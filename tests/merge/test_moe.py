"""transfuse moe: a Mixtral checkpoint from dense tiny Llamas (mergekit-moe configs)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from transfuse.errors import TransfuseError
from transfuse.merge.moe import build_moe

WORDS = ["<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(61)]


def tiny_llamas(root, n=3):
    """A tiny random Llama base with a word-level tokenizer, and n 'experts' (base + noise)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("w", behavior="merged_with_next")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                   bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(root / "base")
    fast.save_pretrained(root / "base")
    paths = []
    for i in range(n):
        m = transformers.LlamaForCausalLM(cfg)
        m.load_state_dict(model.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
        m.save_pretrained(root / f"e{i}")
        fast.save_pretrained(root / f"e{i}")
        paths.append(root / f"e{i}")
    return root / "base", paths


def moe_config(base, paths, mode):
    prompts = [["w1w2w3", "w4w5"], ["w10w11", "w12w13w14w15"], ["w30", "w31w32w33"]]
    return {"base_model": str(base), "gate_mode": mode, "dtype": "float32", "experts_per_token": 2,
            "experts": [{"source_model": str(p), "positive_prompts": prompts[i]} for i, p in enumerate(paths)]}


@pytest.mark.parametrize("mode", ["cheap_embed", "hidden", "random"])
def test_mixtral_loads_and_experts_are_the_dense_mlps(tmp_path, mode):
    transformers = pytest.importorskip("transformers")
    base, paths = tiny_llamas(tmp_path)
    out = build_moe(moe_config(base, paths, mode), tmp_path / "moe")
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "MixtralForCausalLM" and model.config.num_local_experts == 3
    t = load_file(str(out / "model.safetensors"))
    e1 = load_file(str(paths[1] / "model.safetensors"))
    b = load_file(str(base / "model.safetensors"))
    torch.testing.assert_close(t["model.layers.1.mlp.experts.gate_up_proj"][1, :48], e1["model.layers.1.mlp.gate_proj.weight"])
    torch.testing.assert_close(t["model.layers.1.mlp.experts.gate_up_proj"][1, 48:], e1["model.layers.1.mlp.up_proj.weight"])
    torch.testing.assert_close(t["model.layers.0.mlp.experts.down_proj"][1], e1["model.layers.0.mlp.down_proj.weight"])
    torch.testing.assert_close(t["model.layers.0.self_attn.q_proj.weight"], b["model.layers.0.self_attn.q_proj.weight"])
    g = t["model.layers.0.mlp.gate.weight"]
    assert g.shape == (3, 32)
    if mode != "random":
        tol = 1e-2 if mode == "hidden" else 1e-5  # hidden states in bfloat16, as mergekit runs the base
        torch.testing.assert_close(g.norm(dim=1), torch.ones(3), atol=tol, rtol=0)  # rows normalised
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[0, 5, 6, 7]])).logits).all()


def test_cheap_embed_is_the_normalised_prompt_embedding_sum(tmp_path):
    base, paths = tiny_llamas(tmp_path)
    out = build_moe(moe_config(base, paths, "cheap_embed"), tmp_path / "moe")
    emb = load_file(str(base / "model.safetensors"))["model.embed_tokens.weight"]
    ids = [[0, 4, 5, 6], [0, 7, 8]]  # "<s>w1w2w3", "<s>w4w5" (w_i has id 3 + i)
    h = sum(emb[i].sum(0) for i in ids)
    g = load_file(str(out / "model.safetensors"))["model.layers.1.mlp.gate.weight"]
    torch.testing.assert_close(g[0], h / h.norm())


def test_bad_configs_refused(tmp_path):
    base, paths = tiny_llamas(tmp_path, n=2)
    cfg = moe_config(base, paths, "hidden")
    for bad, msg in [({"gate_mode": "nope"}, "gate_mode"), ({"experts_per_token": 3}, "experts_per_token"),
                     ({"shared_experts": [{"source_model": str(base)}]}, "shared_experts"), ({"foo": 1}, "unknown")]:
        with pytest.raises(TransfuseError, match=msg):
            build_moe({**cfg, **bad}, tmp_path / "x")
    same = {**cfg, "experts": [{**e, "source_model": str(paths[0])} for e in cfg["experts"]]}
    with pytest.raises(TransfuseError, match="same model"):
        build_moe(same, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_reads_a_mergekit_yaml(tmp_path):
    import yaml

    from transfuse.cli import main

    base, paths = tiny_llamas(tmp_path)
    (tmp_path / "moe.yml").write_text(yaml.safe_dump(moe_config(base, paths, "random")))
    for seed, folder in [(3, "a"), (3, "b")]:
        with pytest.raises(SystemExit) as e:
            main(["moe", str(tmp_path / "moe.yml"), str(tmp_path / folder), "--seed", str(seed)])
        assert e.value.code == 0
    ga, gb = (load_file(str(tmp_path / f / "model.safetensors"))["model.layers.0.mlp.gate.weight"] for f in "ab")
    assert torch.equal(ga, gb)  # seeded: the same gates on every run
    assert json.loads((tmp_path / "a" / "config.json").read_text())["num_experts_per_tok"] == 2
    with pytest.raises(SystemExit) as e:
        main(["moe", str(tmp_path / "moe.yml"), str(tmp_path / "a")])
    assert e.value.code == 2
