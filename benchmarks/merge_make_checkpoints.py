"""Write random checkpoints in Llama layout (Llama-3.2-1B shapes by default) for the merge benchmark.

A base and N "fine-tuned" models (base + small noise), bf16, sharded safetensors with an index
and a config.json, so both transfuse and mergekit read them as Hugging Face folders. Tensors
are generated one at a time from generators seeded by (model, name): memory stays small.

    python benchmarks/merge_make_checkpoints.py --out .bench/merge_ckpt --models 3
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def llama_shapes(vocab: int, hidden: int, inter: int, layers: int, heads: int, kv_heads: int) -> dict:
    hd = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * hd, hidden), p + "self_attn.k_proj.weight": (kv_heads * hd, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * hd, hidden), p + "self_attn.o_proj.weight": (hidden, heads * hd),
            p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        })
    shapes["model.norm.weight"] = (hidden,)
    return shapes


def _gen(name: str, tag: str) -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(f"{tag}/{name}".encode()).digest()[:7], "little"))


def write(folder: Path, shapes: dict, index: int, dtype: torch.dtype, shard_bytes: int, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shard, size, n, weight_map, files = {}, 0, 0, {}, []

    def flush():
        nonlocal shard, size, n
        if shard:
            n += 1
            fname = f"part-{n}.safetensors"
            save_file(shard, str(folder / fname))
            files.append(fname)
            weight_map.update({k: fname for k in shard})
            shard, size = {}, 0

    for name, shape in shapes.items():
        if len(shape) == 1:
            t = torch.ones(shape)
        else:
            t = torch.randn(shape, generator=_gen(name, "base")) * 0.02
        if index > 0:
            t += torch.randn(shape, generator=_gen(name, f"model{index}")) * 0.002
        t = t.to(dtype)
        nbytes = t.numel() * t.element_size()
        if size + nbytes > shard_bytes:
            flush()
        shard[name] = t
        size += nbytes
    flush()
    # HF names: model-0000i-of-0000N.safetensors
    total = len(files)
    final = {}
    for i, f in enumerate(files, 1):
        new = f"model-{i:05d}-of-{total:05d}.safetensors"
        (folder / f).rename(folder / new)
        final[f] = new
    weight_map = {k: final[v] for k, v in weight_map.items()}
    total_size = sum((folder / v).stat().st_size for v in set(weight_map.values()))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total_size}, "weight_map": weight_map}, indent=1))
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".bench/merge_ckpt")
    ap.add_argument("--models", type=int, default=3, help="checkpoints in all: a base and models-1 fine-tuned")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--shard-gb", type=float, default=1.0)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    heads, kv = max(args.hidden // 64, 1), max(args.hidden // 256, 1)
    shapes = llama_shapes(args.vocab, args.hidden, args.intermediate, args.layers, heads, kv)
    params = sum(torch.Size(s).numel() for s in shapes.values())
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": args.hidden,
        "intermediate_size": args.intermediate, "num_hidden_layers": args.layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": args.hidden // heads, "vocab_size": args.vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "torch_dtype": args.dtype, "hidden_act": "silu",
        "rope_theta": 500000.0, "bos_token_id": 1, "eos_token_id": 2,
    }
    out = Path(args.out)
    for i in range(args.models):
        name = "base" if i == 0 else f"ft{i}"
        write(out / name, shapes, i, getattr(torch, args.dtype), int(args.shard_gb * 1e9), config)
        print(f"wrote {out / name}: {params / 1e9:.3f}B parameters", flush=True)


if __name__ == "__main__":
    main()
