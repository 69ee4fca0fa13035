"""Issue 14, speed for small models: the per-step shortcuts give the same run as the general path.

One CPU process takes make_loader's batches as slices of the epoch order (no DataLoader machinery)
and reads losses and counts lazily; a DataLoader subclass (which the shortcut does not take) goes
through the DataLoader as before. Both must give bit-identical weights and history, with dropout
(global RNG) and a resumed epoch.
"""
import torch
from torch.utils.data import DataLoader

from transfuse.data import IndexedTensors, collate_batch
from transfuse.distill.loop import EpochSampler, _sliceable, make_loader, train
from transfuse.models import build_model
from transfuse.objectives import build_objective
from transfuse.teachers import FrozenTeacher


class PlainLoader(DataLoader):
    """Any DataLoader that is not exactly make_loader's: the loop iterates it as a DataLoader."""


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (90,), generator=g)
    y[::5] = -1
    return IndexedTensors(x, y)


def _run(loader, tmp_path=None, **kw):
    torch.manual_seed(3)
    student = build_model("mlp", {"hidden": [8], "dropout": 0.3}, in_shape=(1, 4, 4), num_classes=3)
    teacher = FrozenTeacher(build_model("mlp", {"hidden": [8]}, in_shape=(1, 4, 4), num_classes=3))
    return train(student=student, teacher=teacher, objective=build_objective("kd"), train_loader=loader, epochs=3,
                 lr=1e-2, seed=4, progress=False, output_dir=tmp_path, **kw)


def test_sliced_batches_equal_the_dataloader_path(tmp_path):
    fast = make_loader(_data(), batch_size=16, seed=4, drop_last=False)
    plain = PlainLoader(_data(), batch_size=16, sampler=EpochSampler(90, seed=4), drop_last=False, collate_fn=collate_batch)
    assert _sliceable(fast) and not _sliceable(plain)
    a, b = _run(fast), _run(plain)
    assert a.history == b.history and a.steps == b.steps == 18
    for (k, v), (_, w) in zip(a.student.state_dict().items(), b.student.state_dict().items()):
        assert torch.equal(v, w), k
    # a run stopped after step 8 (inside epoch 2) and resumed: the sliced path skips into the epoch alike
    _run(make_loader(_data(), batch_size=16, seed=4, drop_last=False), tmp_path, max_steps=8, checkpoint_every=4)
    resumed = _run(make_loader(_data(), batch_size=16, seed=4, drop_last=False), tmp_path, resume=True, checkpoint_every=4)
    assert resumed.history == a.history
    for (k, v), (_, w) in zip(resumed.student.state_dict().items(), a.student.state_dict().items()):
        assert torch.equal(v, w), k
