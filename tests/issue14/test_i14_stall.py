"""Issue 14 item 2: a run that learns nothing says so (log, stderr, result, report) instead of exiting silently."""
import json

import torch
import torch.nn.functional as F

from transfuse.data import IndexedTensors
from transfuse.distill.loop import make_loader, train
from transfuse.distill.stall import StallGuard
from transfuse.models import build_model
from transfuse.objectives import Objective, build_objective


class SignOnlyCE(Objective):
    """mixkd's failure on two classes: CE on logits divided by their std over 2 classes (+-1/sqrt(2))."""

    needs_teacher = False

    def forward(self, student, teacher, batch):
        s = student.logits / student.logits.std(-1, keepdim=True)
        return F.cross_entropy(s, batch.labels)


def _run(objective, tmp_path, *, lr=1e-2, stall_steps=40):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(256) % 2
    x = torch.randn(256, 6, generator=g) + y[:, None] * 1.5
    torch.manual_seed(0)
    student = build_model("mlp", {"hidden": [16]}, in_shape=(6,), num_classes=2)
    return train(student=student, teacher=None, objective=objective, train_loader=make_loader(IndexedTensors(x, y), batch_size=16),
                 epochs=3, lr=lr, output_dir=tmp_path, progress=False, stall_steps=stall_steps)


def test_zero_gradients_are_reported(tmp_path, capsys):
    result = _run(SignOnlyCE(), tmp_path)
    assert len(result.warnings) == 1 and "gradients are ~0 over the first 40 steps" in result.warnings[0]
    assert "warning: the gradients are ~0" in capsys.readouterr().err
    logged = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in logged if "warning" in l] == [40]


def test_a_loss_that_does_not_move_is_reported(tmp_path):
    result = _run(build_objective("ce"), tmp_path, lr=1e-9)
    assert len(result.warnings) == 1 and "training loss has not moved over the first 40 steps" in result.warnings[0]


def test_a_learning_run_gets_no_warning_and_the_guard_can_be_off(tmp_path):
    assert _run(build_objective("ce"), tmp_path / "a").warnings == []
    assert _run(SignOnlyCE(), tmp_path / "b", stall_steps=0).warnings == []


def test_the_guard_judges_only_windows_long_enough():
    short = StallGuard(after=100, total_steps=10)
    assert short.done and short.check(10) is None
    guard = StallGuard(after=30, total_steps=1000)
    for step in range(1, 31):
        guard.observe(step, 1.0 + (0.01 if step % 2 else -0.01))  # flat with noise
    assert guard.check(29) is None and "not moved" in guard.check(30) and guard.check(31) is None
