"""transfuse's LM distillation vs TRL 1.16's GKDTrainer, back to back on the same data, teacher,
student init and step budget (issue 15): mean training loss, held-out perplexity, s/step, peak RSS.

Each training runs in its own process (peak RSS is per process); TRL runs in its own venv::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/lm_vs_trl.py all --work runs/lm_vs_trl \\
        --trl-python /work/venvs/trl/bin/python --steps 30 --batch 4 --seq-len 128

Steps: ``prepare`` (transfuse venv) writes chat records made from Python's documentation (pydoc),
the SmolLM2-135M-Instruct teacher folder and a 6-layer student built from it (saved once, so both
start from the same weights); ``trl`` / ``transfuse`` train one setting each and save the student;
``report`` scores every saved student with the same held-out perplexity code (transfuse's) on the
same held-out records and prints the markdown table. The held-out records are every 10th record
(transfuse's ``split_records`` rule, reproduced in the TRL half), and TRL reads the training records
in the order transfuse's sampler draws them (``EpochSampler``: ``randperm`` seeded by seed * 100003 +
epoch; TRL's own shuffling turned off), so both see the same batches and the per-step losses compare.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HELD_OUT_EVERY = 10  # data.held_out = 0.1 -> every 10th record


def _records(n: int):
    """Chat records from pydoc: a question about a topic and a paragraph of its text as the answer."""
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for j, para in enumerate(p.strip() for p in topics[name].split("\n\n") if len(p.strip()) > 80):
            q = f"What does the Python documentation say about '{name}'" + (f" (part {j + 1})?" if j else "?")
            out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": para[:200]}]})
            if len(out) == n:
                return out
    return out


def prepare(work: Path, n_records: int, layers: int) -> None:
    from transfuse.lm.models import load_causal_lm, smollm2_path, student_from_teacher

    work.mkdir(parents=True, exist_ok=True)
    recs = _records(n_records)
    (work / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    teacher = smollm2_path()
    model, tok = load_causal_lm(str(teacher))
    student = student_from_teacher(model, layers)
    student.save_pretrained(work / "student0")
    tok.save_pretrained(work / "student0")
    (work / "paths.json").write_text(json.dumps({"teacher": str(teacher), "student0": str(work / "student0")}))
    longest = max(len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)["input_ids"])
                  for r in recs)
    print(f"{len(recs)} records (longest {longest} tokens: TRL keeps the last max_length, transfuse the first seq_len, "
          f"so keep seq_len above it), teacher {teacher}, student {layers} layers -> {work}")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trl(work: Path, name: str, beta: float, lmbda: float, steps: int, batch: int, seq_len: int, lr: float) -> None:
    """TRL's GKDTrainer (its ChatML collator: loss on the assistant tokens), CPU, one process."""
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    paths = json.loads((work / "paths.json").read_text())
    recs = [json.loads(l) for l in (work / "chat.jsonl").read_text().splitlines() if l.strip()]
    train = [r for i, r in enumerate(recs) if i % HELD_OUT_EVERY]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0 * 100_003 + 0))  # transfuse's epoch 0
    train = [train[i] for i in order.tolist()]

    class InOrder(GKDTrainer):  # the records in the order above: no shuffling of TRL's own
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)
    tok = AutoTokenizer.from_pretrained(paths["student0"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    student = AutoModelForCausalLM.from_pretrained(paths["student0"], dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(paths["teacher"], dtype=torch.float32)
    args = GKDConfig(
        output_dir=str(work / f"{name}-trainer"), per_device_train_batch_size=batch, max_steps=steps,
        learning_rate=lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        lmbda=lmbda, beta=beta, temperature=1.0, max_length=seq_len, max_new_tokens=32, seq_kd=False,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, bf16=False, fp16=False,
        dataloader_drop_last=True,
    )
    trainer = InOrder(model=student, teacher_model=teacher, args=args, processing_class=tok,
                         train_dataset=datasets.Dataset.from_list(train))
    t0 = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainer.model.save_pretrained(work / name)
    tok.save_pretrained(work / name)
    result = {"name": name, "peer": f"trl {trl.__version__}", "beta": beta, "lmbda": lmbda, "steps": out.global_step,
              "mean_loss": float(out.training_loss), "losses": losses,
              "s_per_step": seconds / max(out.global_step, 1), "peak_rss_mb": _peak_mb()}
    (work / f"{name}.json").write_text(json.dumps(result))
    print(json.dumps(result))


def run_transfuse(work: Path, name: str, beta: float, lmbda: float, steps: int, batch: int, seq_len: int, lr: float,
                  cache_k: int, cache_format: str) -> None:
    """transfuse's recipe (``distill`` with task: lm): jsd with TRL's endpoint convention (beta 0 = forward KL)."""
    from transfuse.recipes.distill_lm import LMConfig, Prepared

    paths = json.loads((work / "paths.json").read_text())
    teacher = {"path": paths["teacher"], "cache": cache_k > 0, "cache_dir": str(work / "cache"), "top_k": max(cache_k, 1)}
    if cache_format != "float16":
        teacher["cache_format"] = cache_format
    cfg = LMConfig.model_validate({
        "teacher": teacher,
        "student": {"path": paths["student0"]},
        "data": {"source": str(work / "chat.jsonl"), "seq_len": seq_len, "batch_size": batch, "held_out": 1 / HELD_OUT_EVERY},
        "objective": {"name": "jsd", "params": {"beta": beta, "kl_at_endpoints": True}, "chunked": False},
        "on_policy": {"lmbda": lmbda},
        "train": {"max_steps": steps, "lr": lr, "schedule": "linear", "warmup_steps": 0, "grad_clip": 1.0, "seed": 0,
                  "log_every": 1, "progress": False},  # a metrics.jsonl row per step, as TRL's logging_steps=1
        "eval": {"samples": 1, "new_tokens": 1},
    })
    prepared = Prepared(cfg)
    t0 = time.perf_counter()
    run_dir = work / f"{name}-run"
    metrics = prepared.run("jsd", {"beta": beta, "kl_at_endpoints": True}, seed=0, output=run_dir)
    losses = [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in l]
    seconds = metrics["train_seconds"]
    prepared.last_student.save_pretrained(work / name)
    prepared.tokenizer.save_pretrained(work / name)
    result = {"name": name, "peer": "transfuse" + (f" (top-{cache_k} cache, {cache_format})" if cache_k else ""),
              "beta": beta, "lmbda": lmbda, "steps": metrics["steps"], "mean_loss": metrics["final_train_loss"], "losses": losses,
              "s_per_step": seconds / max(metrics["steps"], 1), "peak_rss_mb": _peak_mb(),
              "cache_build_s": round(getattr(prepared, "cache_seconds", 0.0), 1), "wall_s": round(time.perf_counter() - t0, 1)}
    (work / f"{name}.json").write_text(json.dumps(result))
    print(json.dumps(result))


def report(work: Path, seq_len: int) -> str:
    """Held-out perplexity of every saved student (one code path for all), and the table."""
    from transfuse.lm.data import load_records, split_records, tokenize_records
    from transfuse.lm.models import load_causal_lm
    from transfuse.recipes.distill_lm import perplexity

    paths = json.loads((work / "paths.json").read_text())
    _, eval_recs = split_records(load_records(str(work / "chat.jsonl")), held_out=1 / HELD_OUT_EVERY)
    rows = []
    init, tok = load_causal_lm(paths["student0"])
    eval_data = tokenize_records(eval_recs, tok, seq_len=seq_len)
    teacher, _ = load_causal_lm(paths["teacher"])
    ref = {"teacher": perplexity(teacher, eval_data), "student init": perplexity(init, eval_data)}
    for f in sorted(work.glob("*.json")):
        if f.name == "paths.json":
            continue
        r = json.loads(f.read_text())
        model, _ = load_causal_lm(str(work / r["name"]))
        r["held_out_ppl"] = perplexity(model, eval_data)
        rows.append(r)
    lines = [f"held-out: {len(eval_data)} records, {int(eval_data.mask.sum())} assistant tokens; perplexity of the teacher "
             f"{ref['teacher']:.3f}, of the student before training {ref['student init']:.3f}", "",
             "| setting | run | steps | first-step loss | mean train loss | max per-step loss gap to TRL | held-out ppl | s/step | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    trl_losses = {(r["lmbda"], r["beta"]): r["losses"] for r in rows if r["peer"].startswith("trl")}
    for r in sorted(rows, key=lambda r: (r["lmbda"], r["beta"], r["name"])):
        ref = trl_losses.get((r["lmbda"], r["beta"]))
        gap = "" if ref is None or r["peer"].startswith("trl") else f"{max(abs(a - b) for a, b in zip(r['losses'], ref)):.2e}"
        lines.append(f"| lmbda {r['lmbda']:g}, beta {r['beta']:g} | {r['peer']} | {r['steps']} | {r['losses'][0]:.4f} | "
                     f"{r['mean_loss']:.4f} | {gap} | {r['held_out_ppl']:.3f} | {r['s_per_step']:.2f} | {r['peak_rss_mb']:.0f} |")
    text = "\n".join(lines)
    print(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["prepare", "trl", "transfuse", "report", "all"])
    ap.add_argument("--work", type=Path, default=Path("runs/lm_vs_trl"))
    ap.add_argument("--name", default=None)
    ap.add_argument("--beta", type=float, default=0.0)
    ap.add_argument("--lmbda", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--cache-k", type=int, default=0)
    ap.add_argument("--cache-format", default="float16")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--cache", nargs="*", default=["64:float16", "32:uint8"], help="k:format of the cached runs (beta 0)")
    ap.add_argument("--trl-python", default="/work/venvs/trl/bin/python")
    a = ap.parse_args()
    common = dict(steps=a.steps, batch=a.batch, seq_len=a.seq_len, lr=a.lr)
    if a.step == "prepare":
        prepare(a.work, a.records, a.layers)
    elif a.step == "trl":
        run_trl(a.work, a.name or f"trl-b{a.beta:g}-l{a.lmbda:g}", a.beta, a.lmbda, **common)
    elif a.step == "transfuse":
        name = a.name or f"transfuse-b{a.beta:g}-l{a.lmbda:g}" + (f"-k{a.cache_k}{a.cache_format}" if a.cache_k else "")
        run_transfuse(a.work, name, a.beta, a.lmbda, cache_k=a.cache_k, cache_format=a.cache_format, **common)
    elif a.step == "report":
        report(a.work, a.seq_len)
    else:  # every run back to back, each in its own process
        me = [sys.executable, __file__]
        flags = ["--work", str(a.work), "--steps", str(a.steps), "--batch", str(a.batch), "--seq-len", str(a.seq_len),
                 "--lr", str(a.lr)]
        if not (a.work / "paths.json").exists():
            subprocess.run([*me, "prepare", "--work", str(a.work), "--records", str(a.records), "--layers", str(a.layers)], check=True)
        for beta in a.betas:
            b = ["--beta", str(beta)]
            subprocess.run([a.trl_python, __file__, "trl", *flags, *b], check=True)
            subprocess.run([*me, "transfuse", *flags, *b], check=True)
        for spec in a.cache:
            k, fmt = spec.split(":")
            subprocess.run([*me, "transfuse", *flags, "--beta", "0", "--cache-k", k, "--cache-format", fmt], check=True)
        report(a.work, a.seq_len)


if __name__ == "__main__":
    main()
