"""A LoRA adapter from a fine-tuned model and its base, by truncated SVD (mergekit-extract-lora's semantics).

Followed mergekit 0.1.5 ``scripts/extract_lora.py``: the modules are those of the fine-tuned
model's architecture (built on the meta device from its config.json); every ``nn.Linear`` (and,
with ``embed_lora``, every ``nn.Embedding``, transposed) not excluded by the regexes gets
delta = W_ft - W_base = U S V^T cut to ``rank`` singular values (fewer where ``sv_epsilon`` drops
them), A = sqrt(S) V^T and B = U sqrt(S) (``distribute_scale``; else A = S V^T, B = U); a bias
delta is saved as ``lora_B.bias``. Embeddings (without ``embed_lora``), the output embedding and
modules of any other type (norms) are saved at full rank in ``modules_to_save`` (or dropped with
``skip_undecomposable``). adapter_config.json: r = the largest rank used, lora_alpha = r and
rank_pattern = alpha_pattern for the others, so every module's scale alpha / r is 1 and
base + B @ A is the rank-r approximation of the fine-tuned weight. The SVD runs in float32; A and B
are written in the fine-tuned weight's dtype. Conv modules are not decomposed (saved at full rank).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .._lazy import torch
from ..errors import TransfuseError
from ._outdir import atomic_output, check_output
from .io import Source, open_source


def _svd_factors(delta: "torch.Tensor", rank: int, sv_epsilon: float, distribute_scale: bool) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """delta (out, in) float32 -> A (r, in), B (out, r) with B @ A the rank-r truncation."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)  # (out, m), (m,), (m, in)
    r = min(rank, s.shape[0])
    if sv_epsilon > 0:
        r = min(int((s > sv_epsilon).sum()), r)
    if distribute_scale:
        root = s[:r].sqrt()
        return root[:, None] * vh[:r], u[:, :r] * root[None, :]
    return s[:r, None] * vh[:r], u[:, :r].clone()


def _meta_model(source: Source):
    """The fine-tuned model's architecture on the meta device (no weights), from its config.json."""
    import transformers

    if not source.config_dir or not (source.config_dir / "config.json").exists():
        raise TransfuseError(f"{str(source.path)!r} has no config.json: extract-lora reads the architecture from it; "
                             "pass the model's folder as save_pretrained wrote it")
    cfg = transformers.AutoConfig.from_pretrained(str(source.config_dir))
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg)


def extract_lora(finetuned: str | Path, base: str | Path, out: str | Path, *, rank: int = 128,
                 distribute_scale: bool = True, embed_lora: bool = False, save_modules: Sequence[str] = (),
                 include: Sequence[str] = (), exclude: Sequence[str] = (), sv_epsilon: float = 0.0,
                 skip_undecomposable: bool = False, overwrite: bool = False) -> Path:
    """Write a PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to ``out``."""
    out = Path(out).expanduser()
    if rank < 1:
        raise TransfuseError(f"rank must be at least 1, got {rank}")
    if sv_epsilon < 0:
        raise TransfuseError(f"sv_epsilon must be >= 0, got {sv_epsilon}")
    for rx in (*include, *exclude):
        try:
            re.compile(rx)
        except re.error as e:
            raise TransfuseError(f"regex {rx!r} does not compile ({e}); fix the --include-regex/--exclude-regex value") from None
    check_output(out, overwrite)
    ft, bs = open_source(str(finetuned), allow_pickle=False), open_source(str(base), allow_pickle=False)
    ft_infos, bs_infos = ft.infos(), bs.infos()
    model = _meta_model(ft)
    nn = torch.nn
    embed_in, embed_out = model.get_input_embeddings(), model.get_output_embeddings()
    vocab_ft = ft_infos.get(_param_name(model, embed_in), ((None,),))[0][0]
    vocab_base = bs_infos.get(_param_name(model, embed_in), ((None,),))[0][0]
    if embed_lora and vocab_ft != vocab_base:
        embed_lora = False  # as mergekit: different vocabularies -> embeddings at full rank
    to_save: List[str] = list(save_modules)

    def wanted(name: str) -> bool:
        if include and not any(re.search(r, name) for r in include):
            return False
        return not any(re.search(r, name) for r in exclude)

    plan: List[Tuple[str, str]] = []  # (module name, "lora" | "embedding" | "save")
    for name, module in model.named_modules():
        if name + ".weight" not in ft_infos:
            continue
        key = name.split(".")[-1]
        is_embed = module is embed_in or module is embed_out or isinstance(module, nn.Embedding)
        if not embed_lora and is_embed and not any(re.search(r, name) for r in exclude) and key not in to_save:
            to_save.append(key)  # as mergekit: embeddings at full rank unless embed_lora
        if name in to_save or key in to_save:
            plan.append((name, "save"))
        elif wanted(name):
            if isinstance(module, nn.Linear):
                plan.append((name, "lora"))
            elif isinstance(module, nn.Embedding):
                plan.append((name, "embedding"))
            elif not skip_undecomposable:
                if key not in to_save:
                    to_save.append(key)
                plan.append((name, "save"))
    for name, kind in plan:
        if kind != "save" and name + ".weight" not in bs_infos:
            raise TransfuseError(f"the base model has no tensor {name + '.weight'!r}; is {str(base)!r} the fine-tuned model's base?")
        if kind != "save" and bs_infos[name + ".weight"][0] != ft_infos[name + ".weight"][0]:
            raise TransfuseError(f"{name + '.weight'!r} has shape {tuple(ft_infos[name + '.weight'][0])} in the fine-tuned model "
                                 f"and {tuple(bs_infos[name + '.weight'][0])} in the base; extract-lora needs the same architecture")
    if not any(kind != "save" for _, kind in plan):
        raise TransfuseError("no module to decompose: check --include-regex / --exclude-regex")

    tensors: Dict[str, "torch.Tensor"] = {}
    ranks: Dict[str, int] = {}
    bias = False
    for name, kind in plan:
        if kind == "save":
            for suffix in (".weight", ".bias"):
                if name + suffix in ft_infos:
                    tensors[f"base_model.model.{name}{suffix}"] = ft.read(name + suffix).contiguous()
            continue
        w_ft = ft.read(name + ".weight")
        delta = w_ft.float() - bs.read(name + ".weight").float()  # (out, in); embeddings (vocab, dim)
        if kind == "embedding":
            a, b = _svd_factors(delta.T, rank, sv_epsilon, distribute_scale)  # A (r, vocab), B (dim, r)
            tensors[f"base_model.model.{name}.lora_embedding_A"] = a.to(w_ft.dtype).contiguous()
            tensors[f"base_model.model.{name}.lora_embedding_B"] = b.to(w_ft.dtype).contiguous()
        else:
            a, b = _svd_factors(delta, rank, sv_epsilon, distribute_scale)  # A (r, in), B (out, r)
            tensors[f"base_model.model.{name}.lora_A.weight"] = a.to(w_ft.dtype).contiguous()
            tensors[f"base_model.model.{name}.lora_B.weight"] = b.to(w_ft.dtype).contiguous()
            if name + ".bias" in ft_infos and name + ".bias" in bs_infos:
                tensors[f"base_model.model.{name}.lora_B.bias"] = (ft.read(name + ".bias").float() - bs.read(name + ".bias").float()).to(w_ft.dtype)
                bias = True
        ranks[name] = a.shape[0]
    r_max = max(ranks.values())
    others = {k: v for k, v in ranks.items() if v != r_max}
    config = {
        "base_model_name_or_path": str(base), "peft_type": "LORA", "use_rslora": False,
        "target_modules": sorted({k.split(".")[-1] for k in ranks}), "modules_to_save": to_save,
        "task_type": "CAUSAL_LM", "r": r_max, "lora_alpha": r_max, "rank_pattern": others, "alpha_pattern": others,
        "lora_dropout": 0.0, "fan_in_fan_out": False, "inference_mode": True, "lora_bias": bias,
    }
    _write(out, tensors, config, f"transfuse extract-lora {finetuned} {base} {out} --rank {rank}")
    return out


def _param_name(model, module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name + ".weight"
    return ""


def _write(out: Path, tensors: dict, config: dict, command: str) -> None:
    from safetensors.torch import save_file

    with atomic_output(out) as tmp:
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
        (tmp / "README.md").write_text(f"# LoRA adapter extracted by transfuse\n\nBase model: `{config['base_model_name_or_path']}`; "
                                       f"rank {config['r']} (alpha = r: scale 1).\n\n```\n{command}\n```\n")
