"""Mix-CPT's logit-swap self-distillation (lssd) vs plain continued pre-training of a small LM.

usage: python benchmarks/continual_lssd.py [--seeds 0 1 2] [--steps-a 800] [--steps-b 400]
A byte-level Llama (2 layers, 128 wide, vocab 256) is pre-trained on corpus A (Python's own
documentation prose, pydoc_data.topics), then trained on corpus B (WordNet glosses, apt wordnet-base)
either with cross-entropy (plain continued pre-training) or with transfuse's `lssd` objective against a
frozen copy of the A-model (Jiang et al. 2024). Reported: held-out bits per byte on A (forgetting) and on
B (gain), before and after. Byte tokens keep the run small and tokenizer-free; everything is seeded.
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F

from transfuse.data.text_bow import wordnet_glosses
from transfuse.objectives import build_objective
from transfuse.signals import Batch, Outputs

SEQ = 128


def corpus_a() -> bytes:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8", "replace")


def corpus_b() -> bytes:
    glosses = wordnet_glosses()
    return "\n".join(g for name in sorted(glosses) for g in glosses[name]).encode("utf-8", "replace")


def chunks(data: bytes, held_out: float = 0.1):
    x = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    n = len(x) // (SEQ + 1)
    x = x[: n * (SEQ + 1)].view(n, SEQ + 1)  # (N, SEQ+1)
    cut = int(n * (1 - held_out))
    return x[:cut], x[cut:]


def tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=SEQ + 1)
    return LlamaForCausalLM(cfg)


@torch.no_grad()
def bits_per_byte(model, held: torch.Tensor, limit: int = 200) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, min(len(held), limit), 50):
        x = held[i : min(i + 50, limit)]
        logits = model(input_ids=x[:, :-1]).logits.float()  # (B, SEQ, 256)
        total += float(F.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1), reduction="sum"))
        count += x[:, 1:].numel()
    model.train()
    return total / count / math.log(2)


def train(model, data: torch.Tensor, steps: int, seed: int, objective=None, teacher=None, lr: float = 2e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x = data[torch.randint(len(data), (32,), generator=gen)]  # (32, SEQ+1)
        inputs, targets = x[:, :-1], x[:, 1:]
        logits = model(input_ids=inputs).logits  # (32, SEQ, 256)
        if objective is None:
            loss = F.cross_entropy(logits.float().reshape(-1, 256), targets.reshape(-1))
        else:
            with torch.no_grad():
                t_logits = teacher(input_ids=inputs).logits
            loss = objective(Outputs(logits=logits), Outputs(logits=t_logits), Batch(inputs=inputs, labels=targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps-a", type=int, default=800)
    ap.add_argument("--steps-b", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(2)
    a_train, a_held = chunks(corpus_a())
    b_train, b_held = chunks(corpus_b())
    rows = {"after A (start of B)": [], "CE on B (plain continued pre-training)": [], "lssd on B (Mix-CPT)": []}
    start = time.perf_counter()
    for seed in args.seeds:
        base = train(tiny_llama(seed), a_train, args.steps_a, seed)
        rows["after A (start of B)"].append((bits_per_byte(base, a_held), bits_per_byte(base, b_held)))
        ce = train(copy.deepcopy(base), b_train, args.steps_b, seed + 100)
        rows["CE on B (plain continued pre-training)"].append((bits_per_byte(ce, a_held), bits_per_byte(ce, b_held)))
        frozen = copy.deepcopy(base).eval().requires_grad_(False)
        ls = train(copy.deepcopy(base), b_train, args.steps_b, seed + 100, build_objective("lssd", {}), frozen)
        rows["lssd on B (Mix-CPT)"].append((bits_per_byte(ls, a_held), bits_per_byte(ls, b_held)))
        print(f"seed {seed} done, {time.perf_counter() - start:.0f} s", flush=True)

    def cell(values):
        t = torch.tensor(values)
        return f"{t.mean():.3f} ± {t.std(unbiased=False):.3f}"

    a0 = torch.tensor([r[0] for r in rows["after A (start of B)"]]).mean()
    b0 = torch.tensor([r[1] for r in rows["after A (start of B)"]]).mean()
    print(f"\nbyte-level Llama 2x128, A = pydoc prose ({len(a_train)} chunks of {SEQ} bytes), B = WordNet glosses "
          f"({len(b_train)} chunks); {args.steps_a} steps on A, {args.steps_b} on B, batch 32; seeds {args.seeds}\n")
    print("| model | bits/byte on A (held out) | change on A (forgetting) | bits/byte on B (held out) | change on B (gain) |")
    print("|---|---|---|---|---|")
    for name, vals in rows.items():
        a = [v[0] for v in vals]
        b = [v[1] for v in vals]
        da = torch.tensor(a).mean() - a0
        db = torch.tensor(b).mean() - b0
        print(f"| {name} | {cell(a)} | {da:+.3f} | {cell(b)} | {db:+.3f} |")


if __name__ == "__main__":
    main()
