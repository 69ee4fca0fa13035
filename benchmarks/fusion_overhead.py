"""Overhead of fused generation: FusedModel.generate with K models vs the sum of the models' own
``generate`` (KV cache) and vs a naive loop that re-runs every model on the full prefix each step.

Same batch, same greedy length (min_new_tokens = max_new_tokens so no run stops early), one process.
Tokens/s count new tokens of the batch. Random Llama models (no downloads).

    python benchmarks/fusion_overhead.py --ks 2 3 --batch 4 --prompt 32 --new 64 --hidden 256 --layers 4
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def make_models(k: int, *, vocab: int, hidden: int, layers: int, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                          num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
                          max_position_embeddings=1024, pad_token_id=0, eos_token_id=2, bos_token_id=1)
        out.append(LlamaForCausalLM(cfg).to(device).eval())
    return out


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def naive(models, rule, ids, new):
    seq = ids
    w = torch.ones(len(models))
    for _ in range(new):
        lps = torch.stack([torch.log_softmax(m(seq).logits[:, -1].float(), -1) for m in models])  # (K, B, V)
        seq = torch.cat([seq, rule(lps, w).argmax(-1, keepdim=True)], dim=1)
    return seq


@torch.no_grad()
def forward_loop(model, ids, new):
    """The floor: a bare greedy loop of the model's own cached forwards, no Hugging Face generate around it."""
    from transfuse.fusion.generate import _cache_key

    key = _cache_key(model)
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(new - 1):
        out = model(input_ids=nxt, use_cache=True, logits_to_keep=1, **{key: getattr(out, key)})
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    return nxt


def main() -> None:
    from transfuse.fusion.generate import FusedModel
    from transfuse.fusion.rules import build_rule

    ap = argparse.ArgumentParser()
    ap.add_argument("--ks", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rule", default="mean")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, pad_token_id=0)
    models = make_models(max(args.ks), vocab=args.vocab, hidden=args.hidden, layers=args.layers, device=args.device)
    ids = torch.randint(3, args.vocab, (args.batch, args.prompt), generator=torch.Generator().manual_seed(0)).to(args.device)
    tokens = args.batch * args.new
    print(f"device {args.device}, threads {args.threads}, batch {args.batch}, prompt {args.prompt}, new {args.new}, "
          f"Llama hidden {args.hidden} x {args.layers} layers, vocab {args.vocab}, rule {args.rule}, median of {args.repeats}")
    print("| K | separate generate, sum (s) | separate bare forward loops, sum (s) | fused generate (s) | "
          "naive full-prefix loop (s) | fused tok/s | fused / separate generate | fused / bare forwards | naive / fused |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in args.ks:
        ms = models[:k]
        separate = sum(timed(lambda m=m: m.generate(ids, **gen), args.repeats) for m in ms)
        bare = sum(timed(lambda m=m: forward_loop(m, ids, args.new), args.repeats) for m in ms)
        fused_model = FusedModel(ms, args.rule)
        fused = timed(lambda: fused_model.generate(ids, **gen), args.repeats)
        rule = build_rule(args.rule)
        slow = float("nan") if args.skip_naive else timed(lambda: naive(ms, rule, ids, args.new), 1)
        print(f"| {k} | {separate:.3f} | {bare:.3f} | {fused:.3f} | {slow:.3f} | {tokens / fused:.1f} | "
              f"{fused / separate:.3f}x | {fused / bare:.3f}x | {slow / fused:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
