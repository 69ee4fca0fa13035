"""mtard and metadmoe resume from a mid-run checkpoint to the weights of an uninterrupted run
(their temperatures, weights, first losses and aggregator live in the objective's state)."""
import copy
import pytest
import torch

from transfuse.data import IndexedTensors
from transfuse.distill.loop import make_loader, train
from transfuse.models import build_model
from transfuse.objectives import build_objective
from transfuse.teachers import EnsembleModel, FrozenTeacher


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 4, 4, generator=g)
    return IndexedTensors(x, x.flatten(1)[:, :3].argmax(1))


class _Killed(Exception):
    pass


def _die(_model):
    raise _Killed  # at the first epoch's end (step 4), before its checkpoint: the mid-epoch one (step 3) is the latest


def _run(name, out, *, resume=False, evaluate=None):
    torch.manual_seed(0)
    student = build_model("mlp", {"hidden": [8]}, in_shape=(1, 4, 4), num_classes=3)
    teachers = [build_model("mlp", {"hidden": [8]}, in_shape=(1, 4, 4), num_classes=3) for _ in range(2)]
    objective = build_objective(name, {"steps": 2} if name == "mtard" else {"width": 8, "heads": 2})
    result = train(student=student, teacher=FrozenTeacher(EnsembleModel(teachers, "mean")), objective=objective,
                   train_loader=make_loader(_data(), batch_size=16), max_steps=6, checkpoint_every=3,
                   output_dir=out, resume=resume, evaluate=evaluate, progress=False)
    return {k: v.detach().clone() for k, v in result.student.state_dict().items()}, copy.deepcopy(objective.state_dict())


@pytest.mark.parametrize("name", ["mtard", "metadmoe"])
def test_resume_from_a_mid_run_checkpoint_gives_the_same_weights(tmp_path, name):
    full, full_state = _run(name, tmp_path / "full")
    with pytest.raises(_Killed):
        _run(name, tmp_path / "cut", evaluate=_die)
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text().strip() == "ckpt-00000003"
    resumed, resumed_state = _run(name, tmp_path / "cut", resume=True)
    assert all(torch.allclose(full[k], resumed[k], atol=1e-6) for k in full)
    assert all(torch.allclose(full_state[k].float(), resumed_state[k].float(), atol=1e-6) for k in full_state)
    if name == "mtard":
        assert not torch.equal(full_state["weights"], torch.tensor([0.5, 0.5]))  # the state really moved
