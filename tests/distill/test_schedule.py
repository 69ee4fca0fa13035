import math

import pytest
import torch

from transfuse.distill.schedule import lr_factor, make_scheduler


def test_shapes_of_the_schedules():
    total = 100
    assert lr_factor(0, total_steps=total, warmup_steps=0, kind="constant") == 1.0
    assert lr_factor(0, total_steps=total, warmup_steps=0, kind="cosine") == pytest.approx(1.0)
    assert lr_factor(50, total_steps=total, warmup_steps=0, kind="cosine") == pytest.approx(0.5)
    assert lr_factor(100, total_steps=total, warmup_steps=0, kind="cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(75, total_steps=total, warmup_steps=0, kind="linear") == pytest.approx(0.25)
    assert lr_factor(4, total_steps=total, warmup_steps=10, kind="linear") == pytest.approx(0.5)
    # one-cycle: starts at 1/25, peaks at 1 after 30% of the steps, anneals to ~0
    assert lr_factor(0, total_steps=total, warmup_steps=0, kind="onecycle") == pytest.approx(1 / 25)
    assert lr_factor(30, total_steps=total, warmup_steps=0, kind="onecycle") == pytest.approx(1.0)
    assert lr_factor(100, total_steps=total, warmup_steps=0, kind="onecycle") < 1e-3


def test_scheduler_drives_the_optimizer_and_resumes():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make_scheduler(opt, kind="cosine", total_steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    opt2 = torch.optim.SGD([p], lr=0.1)
    sched2 = make_scheduler(opt2, kind="cosine", total_steps=10)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.last_epoch == 5
    with pytest.raises(ValueError, match="unknown schedule"):
        make_scheduler(opt, kind="triangle", total_steps=10)
