"""A Mixtral mixture of experts from dense Llama/Mistral experts (mergekit-moe's configs and semantics).

Followed mergekit 0.1.5 ``scripts/moe.py``, ``moe/router.py``, ``moe/mixtral.py``: everything but
the MLPs is copied from ``base_model``; layer l's expert e is expert e's gate/up/down projections
(transformers' fused ``experts.gate_up_proj`` = [gate; up], ``experts.down_proj``), with optional
``noise_scale`` (Gaussian noise, from the seeded generator here) and ``residual_scale`` (down_proj
only); the router of layer l is (E, hidden), one row per expert, from ``gate_mode``:
- ``cheap_embed``: the sum of the base's token embeddings over each expert's prompts (tokenised by
  the base's tokenizer, a BOS prepended, left padding with pad = BOS, padding masked), normalised,
  the same row for every layer;
- ``hidden`` / ``hidden_last``: the base model's hidden state entering each layer at the LAST
  position (mergekit computes ``average = mode == "hidden_avg"``, so ``hidden`` is the last token),
  ``hidden_avg``: averaged over positions (padding included, as there), both averaged over
  prompts, the base run in bfloat16 as mergekit loads it;
- negative prompts are subtracted, then each row is L2-normalised;
- ``random``: N(0, 1), ``uniform_random``: U(-1/sqrt(hidden), 1/sqrt(hidden)). mergekit draws these
  from torch's global RNG unseeded; here they come from ``seed``, so the values differ from any
  mergekit run (the distribution is the same).
dtype: ``dtype`` or else the base config's ``torch_dtype``. Shared experts (Qwen/DeepSeek outputs)
are refused: only the Mixtral output is built.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from .._lazy import torch
from ..errors import TransfuseError
from ._outdir import atomic_output, check_output
from .io import open_source

GATE_MODES = ("hidden", "hidden_avg", "hidden_last", "cheap_embed", "random", "uniform_random")
_KEYS = {"base_model", "experts", "gate_mode", "dtype", "experts_per_token", "shared_experts", "architecture"}
_EXPERT_KEYS = {"source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale"}
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _check_config(cfg: Dict[str, Any], allow_all_same: bool) -> None:
    if not isinstance(cfg, dict):
        raise TransfuseError("a moe config is a mapping with base_model, experts, gate_mode (mergekit-moe's YAML)")
    unknown = set(cfg) - _KEYS
    if unknown:
        raise TransfuseError(f"unknown moe config key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    if "base_model" not in cfg or not cfg.get("experts"):
        raise TransfuseError("a moe config needs base_model and a non-empty experts list")
    if cfg.get("shared_experts"):
        raise TransfuseError("shared_experts (Qwen2-MoE / DeepSeek outputs) are not built here; only the Mixtral output is: remove shared_experts")
    if cfg.get("architecture") not in (None, "mixtral", "Mixtral"):
        raise TransfuseError(f"architecture {cfg['architecture']!r} is not built here; only 'mixtral' is")
    mode = cfg.get("gate_mode", "hidden")
    if mode not in GATE_MODES:
        raise TransfuseError(f"gate_mode {mode!r} is unknown; choose one of {', '.join(GATE_MODES)}")
    if cfg.get("dtype") is not None and cfg["dtype"] not in _DTYPES:
        raise TransfuseError(f"dtype {cfg['dtype']!r} is unknown; choose one of {', '.join(_DTYPES)}")
    k = cfg.get("experts_per_token", 2)
    if not isinstance(k, int) or k < 1:
        raise TransfuseError(f"experts_per_token must be an integer >= 1, got {k!r}")
    experts = cfg["experts"]
    if len(experts) < k:
        raise TransfuseError(f"{len(experts)} experts but experts_per_token={k}: list at least as many experts as experts_per_token")
    for i, e in enumerate(experts):
        if not isinstance(e, dict) or "source_model" not in e:
            raise TransfuseError(f"experts[{i}] needs source_model")
        bad = set(e) - _EXPERT_KEYS
        if bad:
            raise TransfuseError(f"experts[{i}] has unknown key(s) {sorted(bad)}; known: {sorted(_EXPERT_KEYS)}")
        if mode not in ("random", "uniform_random") and not e.get("positive_prompts"):
            raise TransfuseError(f"experts[{i}] has no positive_prompts: gate_mode {mode!r} routes by them (or use gate_mode random)")
    if mode not in ("random", "uniform_random"):
        tup = [(tuple(e["positive_prompts"]), tuple(e.get("negative_prompts") or [])) for e in experts]
        if all(t == tup[0] for t in tup[1:]) and len(tup) > 1:
            raise TransfuseError("every expert has the same prompts: the router could not tell them apart; give each expert its own positive_prompts")
    if not allow_all_same and len(experts) > 1 and all(e["source_model"] == experts[0]["source_model"] for e in experts[1:]):
        raise TransfuseError("every expert is the same model: the MoE would equal it at more cost; pass allow_all_same=True if you will train it")


def _tokenize(tokenizer, prompts: List[str]):
    return tokenizer([(tokenizer.bos_token or "") + p for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)


def gate_vectors(base: str, experts: List[Dict[str, Any]], mode: str, *, num_layers: int, hidden: int,
                 generator: "torch.Generator", tokenizer=None, embed: Optional["torch.Tensor"] = None) -> "torch.Tensor":
    """(L, E, hidden) float32 router rows (mergekit's get_gate_params)."""
    E = len(experts)
    if mode == "random":
        return torch.randn((num_layers, E, hidden), generator=generator)
    if mode == "uniform_random":
        s = math.sqrt(1.0 / hidden)
        return torch.rand((num_layers, E, hidden), generator=generator) * 2 * s - s
    if mode == "cheap_embed":
        def states(tok):
            onehot = torch.nn.functional.one_hot(tok["input_ids"], num_classes=embed.shape[0]).float()  # (B, T, V)
            h = (onehot @ embed.float() * tok["attention_mask"].unsqueeze(-1)).sum(1).sum(0, keepdim=True)  # (1, H)
            return (h / h.norm(dim=-1, keepdim=True).clamp(min=1e-8)).repeat(num_layers, 1)  # (L, H)
    else:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).eval()

        def states(tok):
            with torch.no_grad():
                hs = torch.stack(model(**tok, output_hidden_states=True, return_dict=True).hidden_states[:-1])  # (L, B, T, H)
            hs = hs.sum(2) / hs.shape[2] if mode == "hidden_avg" else hs[:, :, -1, :]  # (L, B, H)
            return hs.sum(1) / hs.shape[1]  # (L, H)
    rows = []
    for e in experts:
        h = states(_tokenize(tokenizer, e["positive_prompts"]))
        if e.get("negative_prompts"):
            h = h - states(_tokenize(tokenizer, e["negative_prompts"]))
        rows.append(h / h.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-8))
    return torch.stack(rows, 0).permute(1, 0, 2).float()  # (L, E, H)


def build_moe(config: Dict[str, Any] | str | Path, out: str | Path, *, seed: int = 0, allow_all_same: bool = False,
              overwrite: bool = False) -> Path:
    """Write a Mixtral checkpoint folder (config.json, model.safetensors, tokenizer) built from a mergekit-moe config."""
    import transformers
    from safetensors.torch import save_file

    if not isinstance(config, dict):
        import yaml

        path = Path(config)
        if not path.exists():
            raise TransfuseError(f"moe config {str(path)!r} does not exist")
        config = yaml.safe_load(path.read_text())
    _check_config(config, allow_all_same)
    out = Path(out).expanduser()
    check_output(out, overwrite)
    experts, mode = config["experts"], config.get("gate_mode", "hidden")
    base = str(config["base_model"])
    srcs = {m: open_source(m, allow_pickle=False) for m in dict.fromkeys([base, *(str(e["source_model"]) for e in experts)])}
    cfgs = {m: s.config() for m, s in srcs.items()}
    types = {c.get("model_type") for c in cfgs.values()}
    if len(types) != 1 or not types <= {"llama", "mistral"}:
        raise TransfuseError(f"the Mixtral output needs Llama or Mistral models of one type; got model types {sorted(map(str, types))}")
    base_cfg = transformers.AutoConfig.from_pretrained(srcs[base].config_dir)
    L, H = base_cfg.num_hidden_layers, base_cfg.hidden_size
    for m, s in srcs.items():
        infos = s.infos()
        for l in range(L):
            for p in ("gate_proj", "up_proj", "down_proj"):
                n = f"model.layers.{l}.mlp.{p}.weight"
                if n not in infos or tuple(infos[n][0]) != tuple(srcs[base].infos()[n][0]):
                    raise TransfuseError(f"{m!r} has no {n!r} of the base's shape: the experts must share the base's architecture")
    tokenizer = None  # as mergekit: the base's tokenizer, copied to the output
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(srcs[base].config_dir)
    except (OSError, ValueError, TypeError):
        if mode not in ("random", "uniform_random"):
            raise TransfuseError(f"the base model {base!r} has no tokenizer: gate_mode {mode!r} tokenises the prompts with it") from None
    if tokenizer is not None:
        tokenizer.padding_side = "left"
        tokenizer.pad_token_id = tokenizer.bos_token_id
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
    g = torch.Generator().manual_seed(seed)
    embed = srcs[base].read("model.embed_tokens.weight") if mode == "cheap_embed" else None
    gates = gate_vectors(base, experts, mode, num_layers=L, hidden=H, generator=g, tokenizer=tokenizer, embed=embed)  # (L, E, H)

    dt = config.get("dtype")
    out_dtype = getattr(torch, _DTYPES[dt]) if dt else (getattr(torch, str(base_cfg.dtype).replace("torch.", "")) if getattr(base_cfg, "dtype", None) else None)
    mcfg = base_cfg if isinstance(base_cfg, transformers.MistralConfig) else transformers.MistralConfig(**base_cfg.to_dict())
    mcfg.sliding_window = None
    out_cfg = transformers.MixtralConfig(**mcfg.to_dict())
    out_cfg.architectures = ["MixtralForCausalLM"]
    out_cfg.num_local_experts, out_cfg.num_experts_per_tok, out_cfg.sliding_window = len(experts), config.get("experts_per_token", 2), None
    if out_dtype is not None:
        out_cfg.dtype = out_dtype

    def cast(t):
        return (t.to(out_dtype) if out_dtype is not None else t).contiguous()

    tensors: Dict[str, "torch.Tensor"] = {}
    for n in srcs[base].infos():
        if ".mlp." not in n:
            tensors[n] = cast(srcs[base].read(n))
    for l in range(L):
        gate_up, down = [], []
        for e in experts:
            s = srcs[str(e["source_model"])]
            ws = {}
            for p in ("gate_proj", "up_proj", "down_proj"):
                w = s.read(f"model.layers.{l}.mlp.{p}.weight")
                if e.get("noise_scale") is not None:
                    w = w + torch.randn(w.shape, generator=g).to(w.dtype) * e["noise_scale"]
                if p == "down_proj" and e.get("residual_scale") is not None:
                    w = w * e["residual_scale"]
                ws[p] = w
            gate_up.append(torch.cat([ws["gate_proj"], ws["up_proj"]], 0))  # (2I, H)
            down.append(ws["down_proj"])  # (H, I)
        tensors[f"model.layers.{l}.mlp.experts.gate_up_proj"] = cast(torch.stack(gate_up))  # (E, 2I, H)
        tensors[f"model.layers.{l}.mlp.experts.down_proj"] = cast(torch.stack(down))  # (E, H, I)
        tensors[f"model.layers.{l}.mlp.gate.weight"] = cast(gates[l])  # (E, H)

    with atomic_output(out) as tmp:
        out_cfg.save_pretrained(tmp)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "moe_config.json").write_text(json.dumps({**config, "seed": seed}, indent=2, default=str))
    return out
