"""Trains two students with an online method; run directly or under `accelerate launch` by the tests.

usage: _online_script.py OUT.safetensors BATCH GRAD_ACCUM METHOD [OUTPUT_DIR CHECKPOINT_EVERY RESUME SLEEP SHARED]
"""
import os
import sys
import time

import torch
from safetensors.torch import save_file
from torch import nn

from transfuse.data import IndexedTensors
from transfuse.distill.loop import make_loader
from transfuse.online import build_method
from transfuse.online.loop import train_students


def make_data(n=256, d=12, c=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)  # (N, d)
    y = (x[:, :c].argmax(1)).long()
    # some unlabelled samples (only the mutual terms see them); not with several processes, where CE's
    # mean over each shard's labelled samples is not the mean over the whole batch's (as in distill's loop)
    if os.environ.get("ONLINE_ALL_LABELLED") != "1":
        y[::5] = -1
    return IndexedTensors(x, y)


def make_students(d=12, c=3):
    torch.manual_seed(1)
    big = nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, c))
    small = nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, c))
    return [big, small]


class Slow:
    """Wraps a method so that each step sleeps: lets a test kill the process mid-run."""

    def __init__(self, method, sleep):
        self.method, self.sleep = method, sleep
        self.kind, self.detach_peers, self.check = method.kind, method.detach_peers, method.check

    def objectives(self, n):
        objectives = self.method.objectives(n)
        sleep = self.sleep

        def nap(*, step, total_steps, loss):
            time.sleep(sleep)

        objectives[0].on_step_end = nap
        return objectives


if __name__ == "__main__":
    out, batch, accum, method = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    output_dir = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None
    every = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    resume = len(sys.argv) > 7 and sys.argv[7] == "1"
    sleep = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
    shared = len(sys.argv) > 9 and sys.argv[9] == "1"
    result = train_students(
        make_students(), Slow(build_method(method, {"temperature": 2.0}), sleep),
        make_loader(make_data(), batch_size=batch, seed=3), epochs=3, lr=0.03, schedule="cosine",
        grad_accum=accum, grad_clip=None if shared else 1.0, shared_optimizer=shared,
        output_dir=output_dir, checkpoint_every=every, resume=resume,
    )
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"world={world}")
        state = {f"s{i}.{k}": v.contiguous() for i, s in enumerate(result.students) for k, v in s.state_dict().items()}
        save_file(state, out)
