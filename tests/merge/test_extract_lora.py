"""transfuse extract-lora: PEFT adapter folder from a fine-tuned tiny Llama and its base (mergekit's semantics)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from transfuse.errors import TransfuseError
from transfuse.merge.extract_lora import extract_lora


def tiny_llama_pair(root, low_rank=3):
    """A tiny random Llama and a 'fine-tune' whose linear deltas have rank ``low_rank`` plus small noise."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(cfg)
    base.save_pretrained(root / "base")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if p.dim() == 2:
                u, v = torch.randn(p.shape[0], low_rank, generator=g), torch.randn(low_rank, p.shape[1], generator=g)
                p.add_(0.05 * u @ v + 1e-4 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    base.save_pretrained(root / "ft")
    return root / "ft", root / "base"


def test_adapter_keys_shapes_config_and_reconstruction(tmp_path):
    ft, base = tiny_llama_pair(tmp_path)
    out = extract_lora(ft, base, tmp_path / "lora", rank=4)
    cfg = json.loads((out / "adapter_config.json").read_text())
    t = load_file(str(out / "adapter_model.safetensors"))
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 4 and cfg["rank_pattern"] == {}
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert set(cfg["modules_to_save"]) == {"embed_tokens", "lm_head", "input_layernorm", "post_attention_layernorm", "norm"}
    ftw, bw = load_file(str(ft / "model.safetensors")), load_file(str(base / "model.safetensors"))
    lin = [k[: -len(".weight")] for k in bw if bw[k].dim() == 2 and "embed" not in k and "lm_head" not in k]
    assert len(lin) == 14
    for name in lin:
        a, b = t[f"base_model.model.{name}.lora_A.weight"], t[f"base_model.model.{name}.lora_B.weight"]
        assert a.shape == (4, bw[name + ".weight"].shape[1]) and b.shape == (bw[name + ".weight"].shape[0], 4)
        delta = ftw[name + ".weight"] - bw[name + ".weight"]
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        best = u[:, :4] @ torch.diag(s[:4]) @ vh[:4]  # Eckart-Young: the rank-4 approximation
        torch.testing.assert_close(b @ a, best, atol=1e-5, rtol=0)
        assert (bw[name + ".weight"] + b @ a - ftw[name + ".weight"]).abs().max() < 1e-3  # the delta is ~rank 3
    torch.testing.assert_close(t["base_model.model.lm_head.weight"], ftw["lm_head.weight"])
    torch.testing.assert_close(t["base_model.model.model.norm.weight"], ftw["model.norm.weight"])


def test_flags_sv_epsilon_no_distribute_embed_lora_and_regexes(tmp_path):
    ft, base = tiny_llama_pair(tmp_path)
    out = extract_lora(ft, base, tmp_path / "a", rank=8, sv_epsilon=0.05, distribute_scale=False, embed_lora=True,
                       exclude=[r"mlp"], skip_undecomposable=True)
    cfg = json.loads((out / "adapter_config.json").read_text())
    t = load_file(str(out / "adapter_model.safetensors"))
    assert cfg["target_modules"] == ["embed_tokens", "k_proj", "lm_head", "o_proj", "q_proj", "v_proj"]
    assert not any("mlp" in k or "norm" in k for k in t)
    a = t["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    b = t["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    assert a.shape[0] <= 8 and torch.allclose(b.T @ b, torch.eye(a.shape[0]), atol=1e-5)  # B = U: orthonormal columns
    assert t["base_model.model.model.embed_tokens.lora_embedding_A"].shape[1] == 64  # (r, vocab)


def test_bad_input_refused_before_work(tmp_path):
    ft, base = tiny_llama_pair(tmp_path)
    with pytest.raises(TransfuseError, match="rank must be"):
        extract_lora(ft, base, tmp_path / "x", rank=0)
    with pytest.raises(TransfuseError, match="regex"):
        extract_lora(ft, base, tmp_path / "x", include=["("])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(TransfuseError, match="already exists"):
        extract_lora(ft, base, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_cli(tmp_path):
    from transfuse.cli import main

    ft, base = tiny_llama_pair(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["extract-lora", str(ft), str(base), str(tmp_path / "cli"), "--rank", "2", "-e", "lm_head"])
    assert e.value.code == 0
    cfg = json.loads((tmp_path / "cli" / "adapter_config.json").read_text())
    assert cfg["r"] == 2 and "lm_head" not in cfg["modules_to_save"] + cfg["target_modules"]
    with pytest.raises(SystemExit) as e:
        main(["extract-lora", str(ft), str(base), str(tmp_path / "cli"), "--rank", "2"])
    assert e.value.code == 2  # the finished folder is not overwritten
