"""Up-scaling / proxy tuning, measured at CPU scale (issue 13's evidence).

A family sharing SmolLM2's vocabulary (V = 49,152):
  large base       SmolLM2-135M-Instruct (30 layers);
  small base       6 of its 30 layers (embeddings, final norm and tied head kept), healed by
                   next-token training on Python's topic help (pydoc, its training split);
  small fine-tuned the small base fine-tuned on synthetic arithmetic word problems;
  large fine-tuned the large base fine-tuned on the same problems (the upper bound; its top
                   layers only, see below).
Then, without any more training, the fusion rules on the large base and the small pair:
  proxy  z_L + alpha (z_small_ft - z_small_base)   (Liu et al. 2024), alpha swept;
  eft    log p_L + beta (log p_small_ft - log p_small_base), beta = 1 (Mitchell et al. 2024);
  dlf    the same delta with a per-position weight solved so the large model's shift matches the
         small pair's KL shift (Fan et al. 2024);
  mean   probability average of the large base and the small fine-tuned.

Task: "Mia has 23 apples. She buys 14 more. How many apples does Mia have now?\\nAnswer: 37\\n", one
addition or subtraction of numbers below 100, from a seeded RNG; held-out problems share no
(name, numbers, operation) with training. Metrics on held-out problems, teacher-forced:
  EM   exact match of greedy decoding, normalised to the first number written: every answer digit
       is the arg-max given the gold prefix, and after the last digit the arg-max is not a digit
       (greedy decoding then writes exactly the gold number; one forward pass instead of a loop);
  NLL  mean negative log-likelihood per answer token (the digits and the closing newline).
Off-task: NLL per token on held-out pydoc text the small base was not healed on.
"gap closed" = (metric - large base) / (large fine-tuned - large base), per metric.

Every model is run once per batch and all rules are applied to the same cached log-probs
(``fused_log_probs`` below calls the registered rules of ``transfuse.fusion.rules``), so the alpha
sweep costs no extra forward passes. Models are cached under ~/.cache/transfuse/upscaling/
(``--cache``), keyed by their settings; a second run only evaluates.

    nice -n 5 .venv/bin/python benchmarks/fusion_upscaling.py [--small] [--json out.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NAMES = ["Mia", "Tom", "Ava", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eli", "Ada", "Ben", "Kim"]
OBJECTS = ["apples", "pens", "coins", "books", "shells", "stamps", "cards", "marbles", "eggs", "rocks"]
ADD = ["buys {b} more", "finds {b} more", "gets {b} more from a friend", "picks up {b} more"]
SUB = ["gives away {b}", "loses {b}", "sells {b}", "gives {b} to a friend"]


# ----------------------------------------------------------------------------- task data
def make_problems(n: int, *, seed: int, exclude: Sequence[Tuple] = ()) -> List[Tuple[str, int, Tuple]]:
    """``n`` distinct word problems (question, answer, key) from a seeded RNG, none whose key is in ``exclude``."""
    rng = random.Random(seed)
    seen = set(exclude)
    out: List[Tuple[str, int, Tuple]] = []
    while len(out) < n:
        name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
        op = rng.choice("+-")
        a = rng.randint(10, 99)
        b = rng.randint(2, 99 if op == "+" else a - 1)
        key = (name, a, b, op)
        if key in seen:
            continue
        seen.add(key)
        verb = rng.choice(ADD if op == "+" else SUB).format(b=b)
        pronoun = "She" if name in ("Mia", "Ava", "Zoe", "Ivy", "Ada", "Kim") else "He"
        q = f"{name} has {a} {obj}. {pronoun} {verb}. How many {obj} does {name} have now?"
        out.append((q, a + b if op == "+" else a - b, key))
    return out


def problem_text(question: str, answer: int) -> Tuple[str, str]:
    """(prompt, answer text): the answer is the digits and a closing newline."""
    return f"{question}\nAnswer: ", f"{answer}\n"


def tokenize_problems(problems, tokenizer, *, seq_len: int = 40):
    """A TokenDataset whose counted positions are the answer's tokens (digits and closing newline)."""
    from transfuse.lm.data import TokenDataset

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = len(problems)
    inputs = torch.full((n, seq_len), pad, dtype=torch.long)
    labels = torch.full((n, seq_len), -100, dtype=torch.long)
    mask = torch.zeros(n, seq_len, dtype=torch.bool)
    attn = torch.zeros(n, seq_len, dtype=torch.long)
    for i, (q, ans, _) in enumerate(problems):
        prompt, answer = problem_text(q, ans)
        p_ids = tokenizer(prompt.rstrip(" "), add_special_tokens=False)["input_ids"]
        full = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        # the prompt's trailing space is its own token before a digit, so the answer starts at len(p_ids) + 1
        start = len(p_ids) + 1
        if full[: len(p_ids)] != p_ids or len(full) > seq_len:
            raise ValueError(f"problem {i} does not tokenise as prompt + answer within {seq_len} tokens")
        L = len(full)
        inputs[i, :L] = torch.tensor(full)
        attn[i, :L] = 1
        for t in range(start, L):  # the logit at t - 1 predicts token t
            mask[i, t - 1] = True
            labels[i, t - 1] = full[t]
    return TokenDataset(inputs, labels, mask, attn)


def digit_token_ids(tokenizer) -> torch.Tensor:
    """Ids of tokens that decode to digits only (what 'the greedy answer goes on' means)."""
    vocab = tokenizer.get_vocab()
    ids = [i for i in vocab.values() if (s := tokenizer.decode([i]).strip()) and s.isdigit()]
    return torch.tensor(sorted(ids), dtype=torch.long)


# ----------------------------------------------------------------------------- metrics
def normalise_answer(text: str) -> Optional[int]:
    """The first integer in a generated answer (``' 37.'`` -> 37, ``'37\\nQuestion'`` -> 37), None if none."""
    digits, started = [], False
    for ch in text:
        if ch.isdigit():
            digits.append(ch)
            started = True
        elif started:
            break
    return int("".join(digits)) if digits else None


def exact_match_rows(logprobs: torch.Tensor, labels: torch.Tensor, row: torch.Tensor, is_digit: torch.Tensor,
                     n_rows: int) -> torch.Tensor:
    """Per row, True when greedy decoding writes exactly the gold number (normalised exact match).

    logprobs (N, V) at the counted positions, labels (N,) their gold tokens, row (N,) the row of each
    (positions in order within a row; the last of a row predicts the closing token), is_digit (V,) bool.
    A row matches when every gold digit is the arg-max and, where the gold token is not a digit (the
    closing newline), the arg-max is not a digit either.
    """
    pred = logprobs.argmax(-1)  # (N,)
    gold_digit = is_digit[labels]  # (N,)
    ok = torch.where(gold_digit, pred == labels, ~is_digit[pred])  # (N,)
    bad = torch.zeros(n_rows, dtype=torch.long).index_add_(0, row, (~ok).long())
    return bad == 0  # (n_rows,)


def gap_closed(value: float, base: float, upper: float) -> float:
    """Fraction of the base -> upper gap that ``value`` closes (1 = as good as the upper bound, 0 = base)."""
    if upper == base:
        return float("nan")
    return (value - base) / (upper - base)


# ----------------------------------------------------------------------------- fusion on cached log-probs
def methods(alphas: Sequence[float]) -> List[Tuple[str, Optional[str], dict, List[str]]]:
    """(label, rule, params, model names in the rule's order); rule None = one model alone."""
    out = [("large base", None, {}, ["large"]), ("small base", None, {}, ["small"]),
           ("small fine-tuned", None, {}, ["small_ft"]), ("large fine-tuned", None, {}, ["large_ft"])]
    out += [(f"proxy alpha={a:g}", "proxy", {"alpha": a}, ["large", "small_ft", "small"]) for a in alphas]
    out += [("eft beta=1", "eft", {"beta": 1.0}, ["large", "small_ft", "small"]),
            ("dlf", "dlf", {}, ["large", "small", "small_ft"]),
            ("mean (large base, small ft)", "mean", {}, ["large", "small_ft"])]
    return out


def fused_log_probs(per_model: Dict[str, torch.Tensor], rule: Optional[str], params: dict, order: List[str]) -> torch.Tensor:
    """log-probs (N, V) of one method from each model's log-probs (N, V) at the same positions."""
    if rule is None:
        return per_model[order[0]]
    from transfuse.fusion.rules import build_rule

    stack = torch.stack([per_model[m] for m in order])  # (K, N, V)
    return build_rule(rule, params)(stack, torch.ones(len(order)))  # (N, V)


@torch.no_grad()
def evaluate(models: Dict[str, torch.nn.Module], data, method_list, *, is_digit: Optional[torch.Tensor] = None,
             batch_size: int = 16) -> Dict[str, Dict[str, float]]:
    """NLL per counted token (and exact match when ``is_digit`` is given) of every method on ``data``.

    Each model runs once per batch; every method is computed from those log-probs."""
    for m in models.values():
        m.eval()
    nll = {label: 0.0 for label, *_ in method_list}
    em = {label: 0 for label, *_ in method_list}
    count, rows = 0, 0
    for s in range(0, len(data), batch_size):
        b = data.__getitems__(list(range(s, min(s + batch_size, len(data)))))
        keep = b["mask"]  # (B, T)
        row = keep.nonzero()[:, 0]  # (N,) row of each counted position, in order
        gold = b["labels"][keep]  # (N,)
        per_model = {}
        for name, model in models.items():
            logits = model(input_ids=b["inputs"], attention_mask=b["attention_mask"]).logits  # (B, T, V)
            per_model[name] = torch.log_softmax(logits[keep].float(), dim=-1)  # (N, V)
        for label, rule, params, order in method_list:
            lp = fused_log_probs(per_model, rule, params, order)  # (N, V)
            nll[label] += float(-lp.gather(1, gold[:, None]).sum())
            if is_digit is not None:
                em[label] += int(exact_match_rows(lp, gold, row, is_digit, len(keep)).sum())
        count += int(keep.sum())
        rows += len(keep)
    out = {}
    for label, *_ in method_list:
        out[label] = {"nll": nll[label] / max(count, 1)}
        if is_digit is not None:
            out[label]["em"] = em[label] / max(rows, 1)
    return out


# ----------------------------------------------------------------------------- models (cached)
def _key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _save(model, tokenizer, target: Path, info: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "run.json").write_text(json.dumps(info, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def train_lm(model, data, *, steps: int, lr: float, batch_size: int, seed: int, trainable: Optional[List[int]] = None):
    """Next-token cross-entropy on the counted tokens with transfuse's loop (``ce`` objective), the
    embeddings (tied output layer) frozen; ``trainable``: only these decoder layers and the final norm."""
    from transfuse.distill.loop import make_loader, train
    from transfuse.lm.models import CausalLM
    from transfuse.objectives import build_objective

    for p in model.parameters():
        p.requires_grad_(trainable is None)
    if trainable is not None:
        for i in trainable:
            for p in model.model.layers[i].parameters():
                p.requires_grad_(True)
        for p in model.model.norm.parameters():
            p.requires_grad_(True)
    model.get_input_embeddings().weight.requires_grad_(False)
    model.get_output_embeddings().weight.requires_grad_(False)
    t0 = time.perf_counter()
    result = train(student=CausalLM(model), teacher=None, objective=build_objective("ce", {}),
                   train_loader=make_loader(data, batch_size=batch_size, seed=seed), epochs=10**6, max_steps=steps,
                   lr=lr, schedule="cosine", warmup_steps=max(1, steps // 10), grad_clip=1.0, seed=seed,
                   progress=False, log_every=10**9, cpu=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return {"steps": result.steps, "seconds": round(time.perf_counter() - t0, 1),
            "final_loss": result.history[-1]["train_loss"] if result.history else None}


def cached_model(cache: Path, name: str, settings: dict, build, tokenizer, log):
    """Load ``name`` from the cache folder keyed by ``settings``, or build, save and return it."""
    from transformers import AutoModelForCausalLM

    target = cache / f"{name}-{_key(settings)}"
    if (target / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32).eval()
        log(f"{name}: cached {target} ({json.loads((target / 'run.json').read_text()).get('train')})")
        return model, json.loads((target / "run.json").read_text())
    model, info = build()
    info = {"settings": settings, "train": info}
    _save(model, tokenizer, target, info)
    log(f"{name}: trained {info['train']} -> {target}")
    return model, info


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a quick check: fewer steps and problems")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="model cache (default ~/.cache/transfuse/upscaling)")
    ap.add_argument("--small-layers", type=int, default=6)
    ap.add_argument("--large-trainable", type=int, default=8, help="top decoder layers of the large model fine-tuned")
    ap.add_argument("--heal-steps", type=int, default=None)
    ap.add_argument("--ft-steps", type=int, default=None)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    from transfuse.lm.data import load_records, split_records, tokenize_records
    from transfuse.lm.models import cache_root, load_causal_lm, student_from_teacher
    import copy

    small = args.small
    heal_steps = args.heal_steps or (20 if small else 150)
    ft_steps = args.ft_steps or (20 if small else 300)
    n_train, n_eval, n_off = (400, 64, 8) if small else (2400, 300, 32)
    cache = Path(args.cache).expanduser() if args.cache else cache_root() / "upscaling"
    log = lambda m: print(m, flush=True)  # noqa: E731
    t_all = time.perf_counter()

    large, tok = load_causal_lm("smollm2-135m-instruct")
    for p in large.parameters():
        p.requires_grad_(False)
    large.eval()
    train_p = make_problems(n_train, seed=args.seed)
    eval_p = make_problems(n_eval, seed=args.seed + 1, exclude=[k for *_, k in train_p])
    task_train, task_eval = tokenize_problems(train_p, tok), tokenize_problems(eval_p, tok)
    pydoc_train, pydoc_eval = split_records(load_records("pydoc"), held_out=0.1)
    heal_data = tokenize_records(pydoc_train, tok, seq_len=64)
    off_eval = tokenize_records(pydoc_eval, tok, seq_len=64)
    off_eval = off_eval.subset(torch.arange(min(n_off, len(off_eval))))
    log(f"task: {len(train_p)} training / {len(eval_p)} held-out problems; off-task: {len(off_eval)} pydoc rows x 64 tokens")

    common = {"seed": args.seed, "v": 1}

    def build_small_base():
        torch.manual_seed(args.seed)
        model = student_from_teacher(large, args.small_layers)
        return model, train_lm(model, heal_data, steps=heal_steps, lr=1e-3, batch_size=8, seed=args.seed)

    small_base, small_info = cached_model(cache, "small-base", {**common, "layers": args.small_layers, "heal": heal_steps},
                                          build_small_base, tok, log)

    ft = {**common, "n_train": n_train, "steps": ft_steps}

    def build_small_ft():
        model = copy.deepcopy(small_base)
        return model, train_lm(model, task_train, steps=ft_steps, lr=1e-3, batch_size=16, seed=args.seed)

    small_ft, small_ft_info = cached_model(cache, "small-ft", {**ft, "from": small_info["settings"]}, build_small_ft, tok, log)

    def build_large_ft():
        # a plain copy of the same config (a deepcopy keeps the GGUF quantizer, which refuses save_pretrained)
        model = type(large)(copy.deepcopy(large.config))
        model.load_state_dict(large.state_dict())
        top = list(range(30 - args.large_trainable, 30))
        return model, train_lm(model, task_train, steps=ft_steps, lr=3e-4, batch_size=16, seed=args.seed, trainable=top)

    large_ft, large_ft_info = cached_model(cache, "large-ft", {**ft, "top": args.large_trainable}, build_large_ft, tok, log)

    models = {"large": large, "small": small_base, "small_ft": small_ft, "large_ft": large_ft}
    mlist = methods(args.alphas)
    t0 = time.perf_counter()
    task = evaluate(models, task_eval, mlist, is_digit=torch.isin(torch.arange(len(tok)), digit_token_ids(tok)))
    off = evaluate(models, off_eval, mlist, batch_size=8)
    eval_s = time.perf_counter() - t0

    base, upper = task["large base"], task["large fine-tuned"]
    rows = []
    for label, *_ in mlist:
        r = {"method": label, "em": task[label]["em"], "nll": task[label]["nll"], "off_nll": off[label]["nll"],
             "gap_em": gap_closed(task[label]["em"], base["em"], upper["em"]),
             "gap_nll": gap_closed(task[label]["nll"], base["nll"], upper["nll"])}
        rows.append(r)
    log(f"\n| method | task EM | task NLL/token | gap closed (EM) | gap closed (NLL) | off-task NLL/token (pydoc) |")
    log("|---|---|---|---|---|---|")
    for r in rows:
        log(f"| {r['method']} | {r['em']:.3f} | {r['nll']:.3f} | {r['gap_em']:.2f} | {r['gap_nll']:.2f} | {r['off_nll']:.3f} |")
    total = time.perf_counter() - t_all
    log(f"\nevaluation {eval_s:.0f} s; whole run {total:.0f} s (small={small})")
    report = {"args": vars(args), "rows": rows, "small_base": small_info, "small_ft": small_ft_info,
              "large_ft": large_ft_info, "eval_seconds": round(eval_s, 1), "total_seconds": round(total, 1),
              "n_train": n_train, "n_eval": n_eval, "n_off_rows": len(off_eval)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
