"""Trains a tiny model with transfuse's loop; run directly or under `accelerate launch` by the tests.

usage: _train_script.py OUT.safetensors BATCH GRAD_ACCUM [OUTPUT_DIR CHECKPOINT_EVERY RESUME SLEEP]
"""
import sys
import time

import torch
from safetensors.torch import save_file
from torch import nn

from transfuse.data import IndexedTensors
from transfuse.distill.loop import make_loader, train
from transfuse.objectives import Objective, build_objective


def make_data(n=256, d=12, c=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :c].argmax(1)).long()
    return IndexedTensors(x, y)


def make_models(d=12, c=3):
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c))
    teacher = nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, c))
    return student, teacher


class SlowObjective(Objective):
    """kd, sleeping after each step so that a test can kill the process mid-run."""

    def __init__(self, sleep: float) -> None:
        super().__init__()
        self.kd = build_objective("kd", {"temperature": 2.0, "alpha": 0.5})
        self.sleep = sleep

    def forward(self, student, teacher, batch):
        return self.kd(student, teacher, batch)

    def on_step_end(self, *, step, total_steps, loss):
        time.sleep(self.sleep)


if __name__ == "__main__":
    out, batch, accum = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    output_dir = sys.argv[4] if len(sys.argv) > 4 else None
    every = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    resume = len(sys.argv) > 6 and sys.argv[6] == "1"
    sleep = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    from transfuse.teachers import FrozenTeacher

    student, teacher = make_models()
    result = train(
        student=student,
        teacher=FrozenTeacher(teacher),
        objective=SlowObjective(sleep),
        train_loader=make_loader(make_data(), batch_size=batch, seed=3),
        epochs=3,
        lr=0.05,
        optimizer="adamw",
        schedule="cosine",
        grad_accum=accum,
        output_dir=output_dir,
        checkpoint_every=every,
        resume=resume,
        progress=False,
    )
    if result.student is not None:
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_initialized() else 1
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(f"world={world}")
            save_file({k: v.contiguous() for k, v in result.student.state_dict().items()}, out)
