"""Regenerate tests/merge/mergekit_refs/: mergekit 0.1.5's outputs on small random checkpoints.

    /work/main/.venv/bin/python scripts/mergekit_references.py [--mergekit /work/venvs/mergekit/bin/mergekit-yaml]

The inputs (tiny Llama and Mistral checkpoints, safetensors) are rebuilt bit for bit from fixed
seeds by ``build_inputs`` (the tests call it too), the configs are ``CASES`` below (mergekit's
examples/ with the real model names swapped for the tiny ones, plus one config per method and per
parameter form), and each mergekit output is stored as one safetensors file per case:
deterministic methods keep every tensor's float32 values; random ones (the DARE family) keep
per-tensor statistics of the delta to the base (kept fraction, mean, std). The tests run
``transfuse merge CONFIG OUT`` on the same config and compare.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict

import torch
from safetensors.torch import load_file, save_file

REFS = Path(__file__).resolve().parents[1] / "tests" / "merge" / "mergekit_refs"

# architecture -> config.json (small: 2 layers, hidden 32, vocab 128, tied embeddings)
_COMMON = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, rms_norm_eps=1e-5,
               tie_word_embeddings=True, torch_dtype="float32", bos_token_id=1, eos_token_id=2)
ARCH = {
    "llama": dict(_COMMON, architectures=["LlamaForCausalLM"], model_type="llama", rope_theta=10000.0),
    "mistral": dict(_COMMON, architectures=["MistralForCausalLM"], model_type="mistral", rope_theta=10000.0,
                    sliding_window=None),
    # 4 layers, for slices: (sorts after the others, so their seeds stay as they were)
    "tall_llama": dict(_COMMON, architectures=["LlamaForCausalLM"], model_type="llama", rope_theta=10000.0, num_hidden_layers=4),
}
# model name -> (architecture, seed of its delta to the base, delta scale); seed 0 is the base itself
MODELS = {
    "base": ("llama", 0, 0.0), "model_a": ("llama", 1, 0.02), "model_b": ("llama", 2, 0.02),
    "model_c": ("llama", 3, 0.02), "mistral_base": ("mistral", 0, 0.0), "mistral_a": ("mistral", 4, 0.02),
    "mistral_b": ("mistral", 5, 0.02), "tall_base": ("tall_llama", 0, 0.0), "tall_a": ("tall_llama", 6, 0.02),
    "tall_b": ("tall_llama", 7, 0.02),
}


def _shapes(cfg: Dict) -> Dict[str, tuple]:
    h, i, v, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    out = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for layer in range(n):
        p = f"model.layers.{layer}."
        out.update({p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
                    p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                    p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
                    p + "post_attention_layernorm.weight": (h,)})
    return out


def model_tensors(name: str) -> Dict[str, torch.Tensor]:
    """The tensors of one input model: the base of its architecture plus a seeded delta (float32)."""
    arch, seed, scale = MODELS[name]
    base_gen = torch.Generator().manual_seed(1000 + sorted(ARCH).index(arch))
    delta_gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in sorted(_shapes(ARCH[arch]).items()):
        t = torch.randn(shape, generator=base_gen) * 0.1  # (shape)
        if len(shape) == 1:
            t = t + 1.0  # norms near one, as trained ones are
        if scale:
            t = t + torch.randn(shape, generator=delta_gen) * scale
        out[key] = t.contiguous()
    return out


def build_inputs(root: Path) -> None:
    """Write every input model (config.json + model.safetensors) under root/NAME."""
    for name, (arch, _, _) in MODELS.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(ARCH[arch], indent=1))
        save_file(model_tensors(name), str(d / "model.safetensors"), metadata={"format": "pt"})
    build_vocab_inputs(root)


# models with tokenizers that differ by a few added tokens: name -> (tensors of, added tokens past the shared 128)
_SHARED = ["<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(3, 126)]  # ids 0..125, then 2 special added tokens
VOCAB_MODELS = {"tok_base": ("base", []), "tok_a": ("model_a", ["<tool>", "<think>"]), "tok_b": ("model_b", ["<think>", "<code>"])}


def build_vocab_inputs(root: Path) -> None:
    """tok_base / tok_a / tok_b: the base / model_a / model_b tensors, each with a WordLevel tokenizer
    (transformers' PreTrainedTokenizerFast) of 128 shared tokens plus its own added ones, one
    embedding row (seeded) per added token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    for name, (tensors_of, extra) in VOCAB_MODELS.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(_SHARED)}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
        fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        fast.add_tokens(extra)
        fast.save_pretrained(str(d))
        tensors = model_tensors(tensors_of)
        g = torch.Generator().manual_seed(100 + len(name) + sum(map(ord, name)))
        emb = tensors["model.embed_tokens.weight"]  # (128, hidden)
        tensors["model.embed_tokens.weight"] = torch.cat([emb, torch.randn(len(extra), emb.shape[1], generator=g) * 0.1]).contiguous()
        (d / "config.json").write_text(json.dumps(dict(ARCH["llama"], vocab_size=128 + len(extra)), indent=1))
        save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})


_ABC = "models:\n  - model: model_a\n    parameters: {P1}\n  - model: model_b\n    parameters: {P2}\n"
# case -> (config YAML, kind): kind "exact" stores values, "random" stores delta statistics
CASES: Dict[str, tuple] = {
    # mergekit's examples/ (names swapped)
    "example_linear": ("models:\n  - model: model_a\n    parameters: {weight: 1.0}\n  - model: model_b\n    parameters: {weight: 0.3}\n"
                       "  - model: model_c\n    parameters: {weight: 0.5}\nmerge_method: linear\ndtype: float16\n", "exact"),
    "example_ties": ("models:\n  - model: model_a\n    parameters:\n      density: [1, 0.7, 0.1]\n      weight: 1.0\n"
                     "  - model: model_b\n    parameters:\n      density: 0.5\n      weight: [0, 0.3, 0.7, 1]\n"
                     "  - model: model_c\n    parameters:\n      density: 0.33\n      weight:\n        - filter: mlp\n          value: 0.5\n"
                     "        - value: 0\nmerge_method: ties\nbase_model: base\nparameters:\n  normalize: true\n  int8_mask: true\n"
                     "dtype: float16\n", "exact"),
    "example_bio_merge": ("models:\n  - model: mistral_a\n    parameters: {density: 0.5, weight: 0.5}\n"
                          "  - model: mistral_b\n    parameters: {density: 0.5, weight: 0.5}\nmerge_method: ties\n"
                          "base_model: mistral_base\nparameters:\n  normalize: false\n  int8_mask: true\ndtype: float16\n", "exact"),
    "example_gradient_slerp": ("models:\n  - model: base\n  - model: model_a\nmerge_method: slerp\nbase_model: base\nparameters:\n  t:\n"
                               "    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n"
                               "    - value: 0.5\ndtype: float16\n", "exact"),
    "example_arcee_fusion": ("models:\n  - model: model_a\n  - model: model_b\nmerge_method: arcee_fusion\nbase_model: model_a\n"
                             "dtype: bfloat16\n", "exact"),
    # one per method
    "linear": (_ABC.format(P1="{weight: 0.7}", P2="{weight: 0.3}") + "merge_method: linear\ndtype: float32\n", "exact"),
    "linear_no_normalize": (_ABC.format(P1="{weight: 0.7}", P2="{weight: 0.6}") + "merge_method: linear\nparameters: {normalize: false}\ndtype: float32\n", "exact"),
    "task_arithmetic": (_ABC.format(P1="{weight: 0.7}", P2="{weight: 0.5}") + "merge_method: task_arithmetic\nbase_model: base\ndtype: float32\n", "exact"),
    "task_arithmetic_lambda": (_ABC.format(P1="{weight: 0.7}", P2="{weight: 0.5}") + "merge_method: task_arithmetic\nbase_model: base\nparameters: {lambda: 0.8, normalize: true}\ndtype: float32\n", "exact"),
    "ties": (_ABC.format(P1="{weight: 0.6, density: 0.4}", P2="{weight: 0.4, density: 0.6}") + "merge_method: ties\nbase_model: base\ndtype: float32\n", "exact"),
    "ties_no_normalize": (_ABC.format(P1="{weight: 0.6, density: 0.4}", P2="{weight: 0.4, density: 0.6}") + "merge_method: ties\nbase_model: base\nparameters: {normalize: false}\ndtype: float32\n", "exact"),
    "breadcrumbs": (_ABC.format(P1="{weight: 0.6, density: 0.7, gamma: 0.05}", P2="{weight: 0.4, density: 0.7, gamma: 0.05}") + "merge_method: breadcrumbs\nbase_model: base\ndtype: float32\n", "exact"),
    "breadcrumbs_ties": (_ABC.format(P1="{weight: 0.6, density: 0.7, gamma: 0.05}", P2="{weight: 0.4, density: 0.7, gamma: 0.05}") + "merge_method: breadcrumbs_ties\nbase_model: base\ndtype: float32\n", "exact"),
    "slerp": ("models:\n  - model: model_a\n  - model: model_b\nmerge_method: slerp\nbase_model: model_a\nparameters: {t: 0.3}\ndtype: float32\n", "exact"),
    "slerp_gradient": ("models:\n  - model: model_a\n  - model: model_b\nmerge_method: slerp\nbase_model: model_a\nparameters:\n  t: [0.1, 0.9]\ndtype: float32\n", "exact"),
    "nuslerp": (_ABC.format(P1="{weight: 0.7}", P2="{weight: 0.3}") + "merge_method: nuslerp\ndtype: float32\n", "exact"),
    "nuslerp_base": (_ABC.format(P1="{weight: 0.7}", P2="{weight: 0.3}") + "merge_method: nuslerp\nbase_model: base\ndtype: float32\n", "exact"),
    "nuslerp_row_wise": (_ABC.format(P1="{weight: 0.7}", P2="{weight: 0.3}") + "merge_method: nuslerp\nparameters: {nuslerp_row_wise: true}\ndtype: float32\n", "exact"),
    "multislerp": (_ABC.format(P1="{weight: 0.5}", P2="{weight: 0.3}") + "  - model: model_c\n    parameters: {weight: 0.2}\nmerge_method: multislerp\ndtype: float32\n", "exact"),
    "multislerp_base": (_ABC.format(P1="{weight: 0.5}", P2="{weight: 0.3}") + "merge_method: multislerp\nbase_model: base\ndtype: float32\n", "exact"),
    "karcher": (_ABC.format(P1="{}", P2="{}") + "  - model: model_c\nmerge_method: karcher\ndtype: float32\n", "exact"),
    "nearswap": ("models:\n  - model: model_a\n  - model: model_b\nmerge_method: nearswap\nbase_model: model_a\nparameters: {t: 0.01}\ndtype: float32\n", "exact"),
    "arcee_fusion": ("models:\n  - model: model_a\n  - model: model_b\nmerge_method: arcee_fusion\nbase_model: model_a\ndtype: float32\n", "exact"),
    "sce": (_ABC.format(P1="{}", P2="{}") + "  - model: model_c\nmerge_method: sce\nbase_model: base\nparameters: {select_topk: 0.5}\ndtype: float32\n", "exact"),
    "model_stock": (_ABC.format(P1="{}", P2="{}") + "  - model: model_c\nmerge_method: model_stock\nbase_model: base\ndtype: float32\n", "exact"),
    "model_stock_filter_wise": (_ABC.format(P1="{}", P2="{}") + "merge_method: model_stock\nbase_model: base\nparameters: {filter_wise: true}\ndtype: float32\n", "exact"),
    "passthrough": ("models:\n  - model: model_a\n    parameters: {scale: 0.5}\nmerge_method: passthrough\ndtype: float32\n", "exact"),
    "filter_lists": (_ABC.format(P1="{weight: [{filter: self_attn, value: 0.9}, {filter: mlp, value: 0.2}, {value: 0.5}]}",
                                 P2="{weight: 0.5}") + "merge_method: linear\ndtype: float32\n", "exact"),
    "gradient_lists": (_ABC.format(P1="{weight: [0.2, 0.8], density: [0.3, 0.9]}", P2="{weight: [1.0, 0.1], density: 0.5}")
                       + "merge_method: ties\nbase_model: base\ndtype: float32\n", "exact"),
    "dtype_bfloat16": (_ABC.format(P1="{weight: 0.6, density: 0.4}", P2="{weight: 0.4, density: 0.6}") + "merge_method: ties\nbase_model: base\ndtype: bfloat16\n", "exact"),
    "int8_mask": (_ABC.format(P1="{weight: 0.6, density: 0.4}", P2="{weight: 0.4, density: 0.6}") + "merge_method: ties\nbase_model: base\nparameters: {int8_mask: true}\ndtype: float32\n", "exact"),
    # slices: (frankenmerges, merges over layer ranges; the output's layers renumbered)
    "slices_passthrough": ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 3]\n"
                           "  - sources:\n      - model: tall_b\n        layer_range: [1, 4]\nmerge_method: passthrough\ndtype: float32\n", "exact"),
    "slices_passthrough_scale": ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 2]\n"
                                 "  - sources:\n      - model: model_b\n        layer_range: [0, 2]\n"
                                 "        parameters:\n          scale:\n            - filter: o_proj\n              value: 0.5\n"
                                 "            - filter: down_proj\n              value: 0.0\n"
                                 "  - sources:\n      - model: tall_a\n        layer_range: [3, 4]\nmerge_method: passthrough\ndtype: float32\n", "exact"),
    "slices_slerp": ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 4]\n      - model: tall_b\n        layer_range: [0, 4]\n"
                     "merge_method: slerp\nbase_model: tall_a\nparameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n"
                     "    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\ndtype: float32\n", "exact"),
    "slices_slerp_two": ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 2]\n      - model: tall_b\n        layer_range: [0, 2]\n"
                         "    parameters: {t: 0.2}\n  - sources:\n      - model: tall_b\n        layer_range: [1, 4]\n      - model: tall_a\n        layer_range: [1, 4]\n"
                         "    base_model: tall_b\n    parameters: {t: [0.1, 0.9]}\nmerge_method: slerp\nbase_model: tall_a\nparameters: {t: 0.5}\ndtype: float32\n", "exact"),
    "slices_ties": ("slices:\n  - sources:\n      - model: tall_base\n        layer_range: [0, 2]\n"
                    "      - model: tall_a\n        layer_range: [0, 2]\n        parameters: {weight: [0.2, 0.8], density: 0.5}\n"
                    "      - model: tall_b\n        layer_range: [0, 2]\n        parameters: {weight: 0.4}\n"
                    "  - sources:\n      - model: tall_base\n        layer_range: [2, 4]\n      - model: tall_a\n        layer_range: [2, 4]\n"
                    "      - model: tall_b\n        layer_range: [2, 4]\n    parameters: {density: 0.7, weight: 0.5}\n"
                    "merge_method: ties\nbase_model: tall_base\nparameters: {density: 0.3}\ndtype: float32\n", "exact"),
    "slices_linear_filter": ("slices:\n  - sources:\n      - model: tall_a\n        layer_range: [0, 2]\n        parameters: {weight: 0.3}\n"
                             "      - model: tall_b\n        layer_range: [2, 4]\n"
                             "        parameters:\n          weight:\n            - filter: layers.2.\n              value: 2.0\n            - value: 1.0\n"
                             "merge_method: linear\ndtype: float32\n", "exact"),
    "slices_passthrough_bf16": ("slices:\n  - sources:\n      - model: tall_b\n        layer_range: [0, 2]\n"
                                "  - sources:\n      - model: tall_a\n        layer_range: [0, 4]\nmerge_method: passthrough\ndtype: bfloat16\n", "exact"),
    # tokenizer_source / tokenizer: (a rebuilt vocabulary; compared token by token)
    "slices_union_passthrough": ("slices:\n  - sources:\n      - model: tok_a\n        layer_range: [0, 2]\n"
                                 "  - sources:\n      - model: tok_b\n        layer_range: [1, 2]\nmerge_method: passthrough\n"
                                 "tokenizer_source: union\ndtype: float32\n", "exact"),
    "slices_union_slerp": ("slices:\n  - sources:\n      - model: tok_a\n        layer_range: [0, 2]\n      - model: tok_b\n        layer_range: [0, 2]\n"
                           "merge_method: slerp\nbase_model: tok_a\nparameters: {t: 0.4}\ntokenizer_source: union\ndtype: float32\n", "exact"),
    "union_slerp": ("models:\n  - model: tok_a\n  - model: tok_b\nmerge_method: slerp\nbase_model: tok_a\nparameters: {t: 0.3}\n"
                    "tokenizer_source: union\ndtype: float32\n", "exact"),
    "union_ties": ("models:\n  - model: tok_a\n    parameters: {weight: 0.6, density: 0.5}\n  - model: tok_b\n    parameters: {weight: 0.4, density: 0.7}\n"
                   "merge_method: ties\nbase_model: tok_base\ntokenizer_source: union\ndtype: float32\n", "exact"),
    "union_linear": ("models:\n  - model: tok_a\n    parameters: {weight: 0.7}\n  - model: tok_b\n    parameters: {weight: 0.3}\n"
                     "merge_method: linear\ntokenizer_source: union\ndtype: float32\n", "exact"),
    "tokenizer_source_model": ("models:\n  - model: tok_a\n    parameters: {weight: 0.5}\n  - model: tok_b\n    parameters: {weight: 0.5}\n"
                               "merge_method: task_arithmetic\nbase_model: tok_base\ntokenizer_source: tok_a\ndtype: float32\n", "exact"),
    "tokenizer_block": ("models:\n  - model: tok_a\n    parameters: {weight: 0.6, density: 0.5}\n  - model: tok_b\n    parameters: {weight: 0.4, density: 0.7}\n"
                        "merge_method: ties\nbase_model: tok_base\ndtype: float32\ntokenizer:\n  source: union\n  pad_to_multiple_of: 8\n  tokens:\n"
                        "    <think>:\n      source: tok_a\n    <tool>:\n      source: {kind: zero}\n"
                        "    <new>:\n      source: {kind: model_token, model: tok_b, token: w5}\n"
                        "    w7:\n      source: tok_base\n      force: true\n", "exact"),
    # random (DARE family): statistics only
    "dare_ties": (_ABC.format(P1="{weight: 0.6, density: 0.5}", P2="{weight: 0.4, density: 0.5}") + "merge_method: dare_ties\nbase_model: base\ndtype: float32\n", "random"),
    "dare_linear": (_ABC.format(P1="{weight: 0.6, density: 0.5}", P2="{weight: 0.4, density: 0.5}") + "merge_method: dare_linear\nbase_model: base\ndtype: float32\n", "random"),
    "dare_ties_no_rescale": (_ABC.format(P1="{weight: 0.6, density: 0.5}", P2="{weight: 0.4, density: 0.5}") + "merge_method: dare_ties\nbase_model: base\nparameters: {rescale: false}\ndtype: float32\n", "random"),
    "della_linear": (_ABC.format(P1="{weight: 0.6, density: 0.5, epsilon: 0.1}", P2="{weight: 0.4, density: 0.5, epsilon: 0.1}") + "merge_method: della_linear\nbase_model: base\nparameters: {lambda: 1.0}\ndtype: float32\n", "random"),
    "della": (_ABC.format(P1="{weight: 0.6, density: 0.5, epsilon: 0.1}", P2="{weight: 0.4, density: 0.5, epsilon: 0.1}") + "merge_method: della\nbase_model: base\ndtype: float32\n", "random"),
}


# measured differences that are mergekit's and not a transfuse bug: mergekit computes in the config's
# 16-bit dtype (every intermediate rounded); transfuse reads the inputs in that dtype but computes in
# float32 and rounds once. case -> (bound on max abs err, bound on the fraction of entries that differ, why)
_SIXTEEN = "mergekit computes in the 16-bit dtype, transfuse in float32 with one final rounding"
DEVIATIONS = {
    "example_linear": (2.0 ** -10, 0.40, _SIXTEEN + " (1 ulp)"),
    "example_ties": (2.0 ** -10, 0.01, _SIXTEEN + " (1 ulp)"),
    "example_bio_merge": (0.01, 0.01, _SIXTEEN + ": a few entries at the TIES top-k boundary differ"),
    "dtype_bfloat16": (0.08, 0.03, _SIXTEEN + ": entries at the TIES top-k boundary differ (bf16 deltas tie in "
                       "magnitude); both are equally far from the float32 merge (mean abs 3.2e-4 vs 3.15e-4)"),
    "example_arcee_fusion": (0.08, 0.05, _SIXTEEN + " (the KL importance and its quantile threshold in bf16); "
                             "mergekit also writes float32 there (its float32 mask promotes the bf16 result), "
                             "transfuse writes the bfloat16 the config asks for"),
}


def delta_stats(merged: Dict[str, torch.Tensor], base: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Per tensor: [fraction of entries that moved from the base, mean of the delta, std of the delta]."""
    out = {}
    for k, t in merged.items():
        d = t.float() - base[k].float()
        out[k] = torch.tensor([(d.abs() > 1e-7).float().mean().item(), d.mean().item(), d.std().item()])
    return out


_ULP = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def _vocab_meta(yaml_text: str, out: Path) -> Dict[str, str]:
    """The output tokenizer's vocabulary and config vocab_size, for configs that rebuild it."""
    if "tokenizer" not in yaml_text:
        return {}
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(out)).get_vocab()
    return {"vocab": json.dumps(vocab, sort_keys=True), "vocab_size": str(json.loads((out / "config.json").read_text())["vocab_size"])}


def _by_token(ref: Dict[str, torch.Tensor], got: Dict[str, torch.Tensor], meta: Dict[str, str], out_dir: Path) -> str:
    """Reorder transfuse's vocabulary rows into the reference's token order (mergekit adds the
    models' tokens in the order of a Python set, transfuse in the config's); '' or what differs."""
    from transformers import AutoTokenizer

    ref_vocab = json.loads(meta["vocab"])
    our_vocab = AutoTokenizer.from_pretrained(str(out_dir)).get_vocab()
    if set(ref_vocab) != set(our_vocab):
        return f"vocabularies differ: {sorted(set(ref_vocab) ^ set(our_vocab))[:5]}"
    cfg_size = json.loads((Path(out_dir) / "config.json").read_text()).get("vocab_size")
    if str(cfg_size) != meta["vocab_size"]:
        return f"config vocab_size {cfg_size} != {meta['vocab_size']}"
    n = len(ref_vocab)
    for k, r in ref.items():
        if r.shape != got[k].shape:
            return f"{k}: shape {list(got[k].shape)} != {list(r.shape)}"
        if r.dim() >= 1 and r.shape[0] >= n and ("embed_tokens" in k or "lm_head" in k):
            order = torch.arange(r.shape[0])
            for t, i in ref_vocab.items():
                order[i] = our_vocab[t]
            got[k] = got[k][order]
    return ""


def compare(case: str, out_dir: Path) -> Dict[str, float]:
    """transfuse's output in out_dir against the stored mergekit reference of one case.

    exact: {"max_abs_err", "ulp_violations"} (entries off by more than 1e-5 and, for a 16-bit output,
    by more than one unit in the last place of the reference); random: the largest differences of
    the kept fraction, of the delta's mean (over the reference std) and of the delta's std (relative),
    over tensors of at least 512 entries."""
    ref_path = REFS / f"{case}.safetensors"
    from safetensors import safe_open

    with safe_open(str(ref_path), "pt") as f:
        meta = f.metadata()
    ref = load_file(str(ref_path))
    got = {}
    for f in sorted(Path(out_dir).glob("*.safetensors")):
        got.update(load_file(str(f)))
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    if missing or extra:
        return {"missing": len(missing), "extra": len(extra)}
    if "vocab" in meta:
        why = _by_token(ref, got, meta, Path(out_dir))
        if why:
            return {"missing": 1.0, "why": why}
    out_dtype = str(next(iter(got.values())).dtype).replace("torch.", "")
    res: Dict[str, float] = {"dtype_match": float(out_dtype == meta["dtype"])}
    if "num_hidden_layers" in meta:  # config.json's layer count (slices stack layers)
        got_cfg = json.loads((Path(out_dir) / "config.json").read_text())
        res["layers_match"] = float(str(got_cfg.get("num_hidden_layers")) == meta["num_hidden_layers"])
    if meta["kind"] == "exact":
        err = 0.0
        bad = differ = 0
        for k, r in ref.items():
            d = (got[k].float() - r).abs()
            err = max(err, d.max().item())
            tol = torch.clamp(r.abs() * _ULP.get(meta["dtype"], 0.0), min=1e-5)
            bad += int((d > tol * 1.0001).sum())
            differ += int((d > 1e-5).sum())
        res.update(max_abs_err=err, ulp_violations=float(bad),
                   differ_fraction=differ / sum(r.numel() for r in ref.values()))
        return res
    base = model_tensors("mistral_base" if "mistral" in meta["config"] else "base")
    stats = delta_stats(got, base)
    kept = mean = std = 0.0
    for k, r in ref.items():
        if base[k].numel() < 512:
            continue
        g = stats[k]
        kept = max(kept, abs(g[0] - r[0]).item())
        mean = max(mean, (abs(g[1] - r[1]) / r[2]).item())
        std = max(std, (abs(g[2] - r[2]) / r[2]).item())
    res.update(kept_diff=kept, mean_diff=mean, std_rel_diff=std)
    return res


def run_transfuse(case: str, root: Path) -> Path:
    """``transfuse merge CASE.yaml out_CASE`` in root (the inputs built there), in this process."""
    from transfuse.cli import main as cli

    (root / f"{case}.yaml").write_text(CASES[case][0])
    old = os.getcwd()
    os.chdir(root)
    try:
        try:
            cli(["merge", f"{case}.yaml", f"tf_{case}"])
        except SystemExit as e:
            if e.code not in (0, None):
                raise RuntimeError(f"transfuse merge {case} exited {e.code}")
    finally:
        os.chdir(old)
    return root / f"tf_{case}"


def table() -> str:
    """Markdown rows: case, method, result against mergekit (runs transfuse on every case)."""
    rows = ["| case | merge_method | kind | result vs mergekit 0.1.5 |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_inputs(root)
        for case, (text, kind) in CASES.items():
            method = next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("merge_method"))
            try:
                r = compare(case, run_transfuse(case, root))
                cell = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
                if case in DEVIATIONS:
                    cell += f" ({DEVIATIONS[case][2]})"
            except Exception as e:  # noqa: BLE001 - the table reports failures
                cell = f"FAILS: {str(e).splitlines()[0][:120]}"
            rows.append(f"| {case} | {method} | {kind} | {cell} |")
    return "\n".join(rows)


# sample conversations for the named chat templates (rendered as transformers renders them)
CONVERSATIONS = {
    "system_user_assistant_user": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there "},
                                   {"role": "assistant", "content": " Hello!"}, {"role": "user", "content": "2+2?"}],
    "user_only": [{"role": "user", "content": "Name a color."}],
    "user_assistant": [{"role": "user", "content": "  Say yes.\n"}, {"role": "assistant", "content": "Yes."}],
    "alpaca_input": [{"role": "user", "content": "Translate."}, {"role": "user_context", "content": "Bonjour"},
                     {"role": "assistant", "content": "Hello"}],
}
CHAT_TEMPLATES = ("alpaca", "chatml", "llama3", "mistral")
CHAT_REFS = REFS / "chat_templates.json"
_RENDER = """
import importlib.resources, json, sys
from transformers.utils.chat_template_utils import _compile_jinja_template
from mergekit._data import chat_templates
convs, names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for name in names:
    tmpl = _compile_jinja_template(importlib.resources.files(chat_templates).joinpath(name + ".jinja").read_text())
    for cname, msgs in convs.items():
        for gen in (False, True):
            try:
                out[f"{name}/{cname}/{gen}"] = tmpl.render(messages=msgs, add_generation_prompt=gen, bos_token="<s>", eos_token="</s>")
            except Exception as e:  # mergekit's template refuses this conversation
                out[f"{name}/{cname}/{gen}"] = "ERROR"
print(json.dumps(out, indent=1, sort_keys=True))
"""


def chat_template_refs(python: str) -> None:
    """mergekit's shipped templates rendered on CONVERSATIONS (in mergekit's venv) -> CHAT_REFS."""
    r = subprocess.run([python, "-c", _RENDER, json.dumps(CONVERSATIONS), json.dumps(CHAT_TEMPLATES)],
                       capture_output=True, text=True, check=True)
    CHAT_REFS.write_text(r.stdout)
    print(f"chat templates: {len(json.loads(r.stdout))} renders")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mergekit", default="/work/venvs/mergekit/bin/mergekit-yaml")
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    ap.add_argument("--table", action="store_true", help="run transfuse on every case and print the comparison table")
    args = ap.parse_args()
    if args.table:
        print(table())
        return 0
    if not args.only or "chat_templates" in args.only:
        chat_template_refs(str(Path(args.mergekit).parent / "python"))
    REFS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_inputs(root)
        for case, (yaml_text, kind) in CASES.items():
            if args.only and case not in args.only:
                continue
            (root / f"{case}.yaml").write_text(yaml_text)
            out = root / f"out_{case}"
            shutil.rmtree(out, ignore_errors=True)
            r = subprocess.run([args.mergekit, f"{case}.yaml", out.name, "--no-copy-tokenizer", "--no-write-model-card", "--quiet",
                                "--random-seed", "0"], cwd=root, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if r.returncode != 0:
                print(f"{case}: mergekit failed\n{r.stderr[-2000:]}", file=sys.stderr)
                continue
            merged = {}
            for f in sorted(out.glob("*.safetensors")):
                merged.update(load_file(str(f)))
            dtype = str(next(iter(merged.values())).dtype).replace("torch.", "")
            if kind == "random":
                base_name = "mistral_base" if "mistral" in yaml_text else "base"
                tensors = delta_stats(merged, model_tensors(base_name))
            else:
                tensors = {k: v.float().contiguous() for k, v in merged.items()}
            out_cfg = json.loads((out / "config.json").read_text())
            save_file(tensors, str(REFS / f"{case}.safetensors"),
                      metadata={"kind": kind, "dtype": dtype, "config": yaml_text, "mergekit": "0.1.5",
                                "num_hidden_layers": str(out_cfg.get("num_hidden_layers")), **_vocab_meta(yaml_text, out)})
            print(f"{case}: {kind}, {len(tensors)} tensors, {dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
