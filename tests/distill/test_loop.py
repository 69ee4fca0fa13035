"""The loop: accumulation and process count don't change the result; errors are clear."""
import subprocess
import sys
from pathlib import Path

import pytest
from process_helpers import free_port
import torch
from safetensors.torch import load_file
from torch import nn

from transfuse.data import IndexedTensors
from transfuse.distill.loop import count_units, make_loader, train
from transfuse.errors import TransfuseError
from transfuse.objectives import Objective, build_objective
from transfuse.signals import Batch
from transfuse.teachers import FrozenTeacher

HERE = Path(__file__).parent
SCRIPT = HERE / "_train_script.py"


def _run_script(out, batch, accum, *extra, launcher=()):
    cmd = [*launcher, str(SCRIPT), str(out), str(batch), str(accum), *map(str, extra)]
    if not launcher:
        cmd = [sys.executable, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    assert _run_script(tmp_path / "a.st", 64, 1).returncode == 0
    assert _run_script(tmp_path / "b.st", 16, 4).returncode == 0
    a, b = load_file(tmp_path / "a.st"), load_file(tmp_path / "b.st")
    assert _max_diff(a, b) < 1e-5
    # training really moved the weights, so the comparison is not between two untouched models
    sys.path.insert(0, str(HERE))
    import _train_script

    initial = _train_script.make_models()[0].state_dict()
    assert _max_diff(a, initial) > 1e-2


def test_two_processes_match_one_process(tmp_path):
    # `accelerate launch --cpu` starts several CPU processes only through mpirun; `--multi_gpu` on a
    # machine without a GPU starts them with torch.distributed (gloo), which is what this test needs.
    accelerate = Path(sys.executable).parent / "accelerate"
    launcher = (str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()))
    single = _run_script(tmp_path / "one.st", 64, 1)
    assert single.returncode == 0, single.stderr
    two = _run_script(tmp_path / "two.st", 64, 1, launcher=launcher)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "world=2" in two.stdout  # really two processes, not two copies of one
    a, b = load_file(tmp_path / "one.st"), load_file(tmp_path / "two.st")
    assert _max_diff(a, b) < 1e-5
    # the two-process run is not simply the one-process run again: a different global batch differs
    assert _run_script(tmp_path / "other.st", 32, 1).returncode == 0
    assert _max_diff(a, load_file(tmp_path / "other.st")) > 1e-4


class _MaskedMSE(Objective):
    """Mean over masked positions of (student - 0)^2: lets the test control units per micro-batch."""

    needs_teacher = False

    def forward(self, student, teacher, batch):
        per = student.logits.pow(2).mean(-1)  # (B, T)
        m = batch.mask.float()
        return (per * m).sum() / m.sum()


class _TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(11, 4)

    def forward(self, x):
        return self.emb(x)  # (B, T, 4)


class _TokenData(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 11, (8, 6), generator=g)
        lengths = torch.tensor([1, 6, 2, 5, 3, 6, 1, 4])
        self.mask = torch.arange(6)[None] < lengths[:, None]

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"inputs": self.x[i], "mask": self.mask[i], "index": torch.tensor(i)}


def test_token_normalisation_is_global_across_micro_batches():
    """Micro-batches with different token counts: gradient == one batch averaged over all tokens."""
    def grads(batch_size, accum):
        model = _TokenModel()
        loader = torch.utils.data.DataLoader(_TokenData(), batch_size=batch_size, shuffle=False)
        train(student=model, teacher=None, objective=_MaskedMSE(), train_loader=loader, max_steps=1,
              optimizer="sgd", lr=1.0, momentum=0.0, grad_accum=accum, progress=False)
        return model.emb.weight.detach().cpu().clone()

    full, split = grads(8, 1), grads(2, 4)
    assert torch.allclose(full, split, atol=1e-6)
    # a naive per-micro-batch mean would differ here
    data = _TokenData()
    counts = [int(data.mask[i : i + 2].sum()) for i in range(0, 8, 2)]
    assert len(set(counts)) > 1


def test_count_units():
    b = Batch(inputs=torch.zeros(3, 4), mask=torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
    assert count_units(b) == 3
    assert count_units(Batch(inputs=torch.zeros(5, 2))) == 5


def _toy(n=64, c=3, label_shift=0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = x[:, :c].argmax(1) + label_shift
    return IndexedTensors(x, y)


def test_nan_loss_stops_with_the_step():
    class Boom(Objective):
        needs_teacher = False

        def forward(self, student, teacher, batch):
            return student.logits.sum() * float("nan")

    with pytest.raises(TransfuseError, match=r"at step 1 .*lower the learning rate"):
        train(student=nn.Linear(5, 3), teacher=None, objective=Boom(), train_loader=make_loader(_toy(), batch_size=16),
              progress=False)


def test_label_out_of_range_is_clear():
    with pytest.raises(TransfuseError, match=r"label is 5 but the student has only 3 outputs"):
        train(student=nn.Linear(5, 3), teacher=None, objective=build_objective("ce"),
              train_loader=make_loader(_toy(label_shift=3), batch_size=16), progress=False)


def test_class_count_mismatch_is_clear():
    with pytest.raises(TransfuseError, match=r"teacher predicts 4 classes but the student 3"):
        train(student=nn.Linear(5, 3), teacher=FrozenTeacher(nn.Linear(5, 4)), objective=build_objective("kd"),
              train_loader=make_loader(_toy(), batch_size=16), progress=False)


def test_class_count_changing_after_the_first_batch_is_clear():
    """The class counts are checked on the first batch; a later mismatch still gets the clear error, not a traceback."""
    from transfuse.signals import Outputs

    class Shifting:
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            return Outputs(logits=torch.zeros(batch.size, 3 if self.calls == 1 else 5))

    with pytest.raises(TransfuseError, match=r"teacher predicts 5 classes but the student 3"):
        train(student=nn.Linear(5, 3), teacher=Shifting(), objective=build_objective("kd"),
              train_loader=make_loader(_toy(), batch_size=16), progress=False)


def test_teacher_gets_no_gradient_and_student_learns():
    teacher = nn.Linear(5, 3)
    before_t = teacher.weight.detach().clone()
    student = nn.Linear(5, 3)
    before_s = student.weight.detach().clone()
    train(student=student, teacher=FrozenTeacher(teacher), objective=build_objective("kd"),
          train_loader=make_loader(_toy(), batch_size=16), epochs=2, progress=False)
    assert torch.equal(teacher.weight.detach().cpu(), before_t)  # the loop may have moved it to a GPU
    assert not torch.equal(student.weight.detach().cpu(), before_s)


def test_batch_not_divisible_by_processes_is_only_checked_for_many():
    # one process: any batch size works
    train(student=nn.Linear(5, 3), teacher=None, objective=build_objective("ce"),
          train_loader=make_loader(_toy(), batch_size=7), progress=False)


def test_two_runs_with_other_settings_in_one_process():
    """A notebook trains twice with different precision / device settings: Accelerate's singleton state must not refuse."""
    for precision, cpu in (("no", False), ("bf16", True), ("no", True), ("no", False)):
        result = train(student=nn.Linear(5, 3), teacher=None, objective=build_objective("ce"),
                       train_loader=make_loader(_toy(), batch_size=16), progress=False,
                       mixed_precision=precision, cpu=cpu)
        assert result.steps == 4


def test_token_loss_is_normalised_globally_across_processes_and_micro_batches(tmp_path):
    """forward_kl on uneven token masks: 1 process x 1 micro-batch == 1x4 == 2 processes x 1 == 2 x 2."""
    script = HERE / "_token_script.py"
    accelerate = Path(sys.executable).parent / "accelerate"
    runs = {
        "one": ([sys.executable, str(script)], 8, 1),
        "accum": ([sys.executable, str(script)], 2, 4),
        "two": ([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
                 "no", "--dynamo_backend", "no", "--main_process_port", "PORT", str(script)], 8, 1),
        "two_accum": ([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                       "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "PORT",
                       str(script)], 4, 2),
    }
    weights = {}
    for name, (cmd, batch, accum) in runs.items():
        # a port picked only now: one picked up front can be taken by the previous run's connections
        cmd = [str(free_port()) if part == "PORT" else part for part in cmd]
        proc = subprocess.run([*cmd, str(tmp_path / f"{name}.st"), str(batch), str(accum)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert ("world=2" if name.startswith("two") else "world=1") in proc.stdout
        weights[name] = load_file(tmp_path / f"{name}.st")
    for name in ("accum", "two", "two_accum"):
        assert _max_diff(weights["one"], weights[name]) < 1e-6, name
