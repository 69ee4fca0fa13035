"""takd: each stage is offline kd from the previous model of the chain (bit-identical to running
the stages by hand), and a resumed run loads finished stages instead of training them again."""
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import _online_script  # noqa: E402

from transfuse.distill.loop import make_loader, train  # noqa: E402
from transfuse.objectives import build_objective  # noqa: E402
from transfuse.online import build_method  # noqa: E402
from transfuse.teachers import FrozenTeacher  # noqa: E402

LOOP = dict(epochs=2, schedule="cosine", seed=4)


def _chain():
    torch.manual_seed(7)
    return [nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 3)), nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)),
            nn.Linear(12, 3)]


def _loader():
    return make_loader(_online_script.make_data(), batch_size=32, seed=4)


def test_takd_stages_are_kd_from_the_previous_model(tmp_path):
    method = build_method("takd", {"temperature": 2.0, "alpha": 0.7})
    models, curves = method.run(_chain(), _loader(), lrs=[0.02, 0.03, 0.05], output_dir=tmp_path / "run", **LOOP)
    assert set(curves) == {"stage0", "stage1", "stage2"}
    by_hand = _chain()
    by_hand[0] = train(student=by_hand[0], teacher=None, objective=build_objective("ce"), train_loader=_loader(), lr=0.02, progress=False, **LOOP).student
    for k, lr in ((1, 0.03), (2, 0.05)):
        by_hand[k] = train(student=by_hand[k], teacher=FrozenTeacher(by_hand[k - 1]), train_loader=_loader(), lr=lr, progress=False,
                           objective=build_objective("kd", {"temperature": 2.0, "alpha": 0.7}), **LOOP).student
    for a, b in zip(models, by_hand):
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
    assert all(p.requires_grad for m in models for p in m.parameters())  # the chain's teachers are handed back trainable
    # resumed: finished stages are loaded, not trained again (a different lr would change them)
    again, curves = method.run(_chain(), _loader(), lrs=[0.5, 0.5, 0.5], output_dir=tmp_path / "run", resume=True, **LOOP)
    assert curves == {}
    for a, b in zip(models, again):
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)


def test_takd_keeps_a_teacher_that_comes_with_weights(tmp_path):
    chain = _chain()
    before = {k: v.clone() for k, v in chain[0].state_dict().items()}
    models, curves = build_method("takd").run(chain, _loader(), lrs=[0.02] * 3, teacher_has_weights=True, **LOOP)
    assert "stage0" not in curves and all(torch.equal(before[k], v) for k, v in models[0].state_dict().items())
