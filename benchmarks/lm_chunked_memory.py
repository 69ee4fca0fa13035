"""Peak memory and time per step of the LM distillation loss at V = 49,152 (SmolLM2's vocabulary):
transfuse's chunked loss (fused gradients; checkpoint recompute) vs the naive full-logits loss vs TRL's
GKD loss (``GKDTrainer.generalized_jsd_loss``), all computing the same generalized JSD (beta 0.5)
from final hidden states (N, 576) and output layers (49,152, 576), float32, forward + backward.

Each (method, length) runs in its own process; peak memory is the rise of the process's max RSS
(CPU) or of the CUDA allocator's peak (``--device cuda``) during the first step over what the inputs
already took; time is the mean of the next steps.
TRL runs in its own virtual environment (.bench/trlvenv: torch==2.13.0 then trl).

    .venv/bin/python benchmarks/lm_chunked_memory.py [--lengths 512 1024 2048 4096] [--steps 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRL_PY = ROOT / ".bench" / "trlvenv" / "bin" / "python"
V, D = 49152, 576


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(method: str, n: int, steps: int, chunk: int, device: str = "cpu") -> dict:
    import torch

    torch.manual_seed(0)
    dev = torch.device(device)
    h_all = (torch.randn(n, D, device=dev) * 0.5).requires_grad_()
    w = (torch.randn(V, D, device=dev) * 0.05).requires_grad_()
    th_all, tw = torch.randn(n, D, device=dev) * 0.5, torch.randn(V, D, device=dev) * 0.05
    labels_all = torch.randint(0, V, (1, n), device=dev)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()
    # a warm-up step on 8 tokens pays for lazy initialisation (imports, kernels, the weight's gradient buffer)
    sizes = {"h": h_all[:8].detach().requires_grad_(), "th": th_all[:8], "labels": labels_all[:, :8]}

    if method == "trl":
        from trl.experimental.gkd.gkd_trainer import GKDTrainer

        def step():
            h, th, labels = sizes["h"], sizes["th"], sizes["labels"]
            logits = (h @ w.t()).unsqueeze(0)  # (1, N, V)
            with torch.no_grad():
                t_logits = (th @ tw.t()).unsqueeze(0)
            loss = GKDTrainer.generalized_jsd_loss(logits, t_logits, labels=labels, beta=0.5)
            loss.backward()
            return float(loss)
    else:
        sys.path.insert(0, str(ROOT / "src"))
        from transfuse.lm.chunked import chunked_objective_sum
        from transfuse.objectives import build_objective
        from transfuse.signals import Batch, Outputs

        obj = build_objective("jsd", {"beta": 0.5})

        def step():
            h, th = sizes["h"], sizes["th"]
            mask = torch.ones(1, h.shape[0], dtype=torch.bool, device=h.device)
            if method == "naive":
                logits = (h @ w.t()).unsqueeze(0)
                with torch.no_grad():
                    t_logits = (th @ tw.t()).unsqueeze(0)
                loss = obj(Outputs(logits=logits), Outputs(logits=t_logits), Batch(inputs=mask, mask=mask))
            else:
                loss = chunked_objective_sum(obj, student_hidden=h, student_weight=w, teacher_hidden=th,
                                             teacher_weight=tw, chunk_size=chunk, mode=method) / h.shape[0]
            loss.backward()
            return float(loss)

    step()
    w.grad.zero_()
    sizes.update(h=h_all, th=th_all, labels=labels_all)
    sync()
    if cuda:  # GPU: the allocator's peak over what the inputs and the weight's gradient already hold
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:  # CPU: the rise of the process's max RSS
        base = _rss_mb()
    loss = step()
    sync()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb()) - base
    t0 = time.perf_counter()
    for _ in range(steps):
        h_all.grad = None
        w.grad.zero_()
        step()
    sync()
    return {"method": method, "tokens": n, "peak_mb": round(peak, 1), "s_per_step": (time.perf_counter() - t0) / steps,
            "loss": loss, "device": torch.cuda.get_device_name() if cuda else "cpu"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--worker", nargs=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--methods", nargs="+", default=["naive", "fused", "checkpoint", "trl"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.steps, args.chunk, args.device)))
        return
    methods = [m for m in args.methods if m != "trl" or TRL_PY.exists()]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    rows = []
    for n in args.lengths:
        for m in methods:
            py = str(TRL_PY) if m == "trl" else sys.executable
            out = subprocess.run([py, __file__, "--worker", m, str(n), "--steps", str(args.steps), "--chunk", str(args.chunk),
                                  "--device", args.device],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nV={V}, D={D}, float32, chunk={args.chunk} tokens, B=1, device {rows[0]['device'] if rows else args.device}; "
          "loss = generalized JSD beta 0.5; fwd+bwd of the loss only")
    print("| tokens | method | peak MB | s/step | peak vs naive | time vs naive | loss |")
    print("|---|---|---|---|---|---|---|")
    for n in args.lengths:
        base = next((r for r in rows if r["tokens"] == n and r["method"] == "naive"), None)
        for r in (r for r in rows if r["tokens"] == n):
            pr = base["peak_mb"] / max(r["peak_mb"], 1e-9) if base else float("nan")
            tr = r["s_per_step"] / base["s_per_step"] if base else float("nan")
            print(f"| {n} | {r['method']} | {r['peak_mb']:.0f} | {r['s_per_step']:.2f} | {pr:.1f}x lower | {tr:.2f}x | {r['loss']:.5f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
