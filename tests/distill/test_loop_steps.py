"""The loop's named steps compose by hand: two students sharing one teacher signal per batch.

The student trained this way must be bit-identical to ``train`` with the same settings, so the
steps are the loop (not a copy of it) and a recipe with several models can rely on them.
"""
import torch

from transfuse.data import IndexedTensors
from transfuse.distill.loop import (
    Learner,
    Progress,
    epoch_batches,
    make_accelerator,
    make_loader,
    next_window,
    plan_steps,
    prepare_loader,
    train,
)
from transfuse.models import build_model
from transfuse.objectives import build_objective
from transfuse.teachers import FrozenTeacher


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 1, 6, 6, generator=g)  # (N, 1, 6, 6)
    y = torch.randint(0, 3, (80,), generator=g)
    y[::4] = -1  # some unlabelled samples
    return IndexedTensors(x, y)


def _model(seed):
    torch.manual_seed(seed)
    return build_model("mlp", {"hidden": [16]}, in_shape=(1, 6, 6), num_classes=3)


SETTINGS = dict(epochs=2, grad_accum=2, lr=3e-3, schedule="cosine", warmup_steps=1, grad_clip=1.0, seed=5)


def _two_students_by_hand(teacher):
    """A custom loop: one teacher forward per micro-batch, shared by a kd student and a dkd student."""
    s = SETTINGS
    data = make_loader(_data(), batch_size=16, seed=s["seed"])
    plan = plan_steps(data, epochs=s["epochs"], grad_accum=s["grad_accum"])
    torch.manual_seed(s["seed"])
    accelerator = make_accelerator()
    common = dict(teacher=teacher, total_steps=plan.total_steps, lr=s["lr"], schedule=s["schedule"],
                  warmup_steps=s["warmup_steps"], grad_clip=s["grad_clip"], seed=s["seed"])
    learners = [Learner(accelerator, student=_model(1), objective=build_objective("kd"), **common),
                Learner(accelerator, student=_model(2), objective=build_objective("dkd"), **common)]
    loader = prepare_loader(accelerator, data)
    state, teacher_calls = Progress(), 0
    for epoch in range(plan.epochs):
        micro = epoch_batches(accelerator, loader, epoch, sampler=data.sampler)
        while state.step < plan.total_steps:
            window = next_window(micro, s["grad_accum"])
            if not window:
                break
            window = [learners[0].prepare_batch(b, step=state.step) for b in window]  # kd and dkd change no input
            units = torch.tensor([float(b.size) for b in window], dtype=torch.float64)
            for i, batch in enumerate(window):
                teacher_out = learners[0].teacher_signal(batch)  # once for both students
                teacher_calls += 1
                for learner in learners:
                    loss = learner.loss(learner.forward(batch), teacher_out, batch)
                    learner.backward(loss, float(units[i] * accelerator.num_processes / units.sum()))
            for learner in learners:
                learner.optimizer_step()
            state.step += 1
            for learner in learners:
                learner.end_step(step=state.step, loss=0.0)
        for learner in learners:
            learner.end_epoch(epoch=epoch + 1, epochs=plan.epochs)
    assert teacher_calls == len(data) * plan.epochs  # the teacher ran once per micro-batch, not once per student
    return [learner.student for learner in learners]


def test_steps_composed_by_hand_match_train_bit_for_bit():
    torch.manual_seed(9)
    teacher = FrozenTeacher(build_model("mlp", {"hidden": [16]}, in_shape=(1, 6, 6), num_classes=3).eval())
    kd_student, dkd_student = _two_students_by_hand(teacher)
    s = SETTINGS
    for seed, objective, by_hand in ((1, "kd", kd_student), (2, "dkd", dkd_student)):
        ref = train(student=_model(seed), teacher=teacher, objective=build_objective(objective),
                    train_loader=make_loader(_data(), batch_size=16, seed=s["seed"]), progress=False, **s).student
        ref_state, hand_state = ref.state_dict(), by_hand.state_dict()
        for k in ref_state:
            assert torch.equal(ref_state[k], hand_state[k]), (objective, k)
        # training moved the weights, so equality is not between two untouched copies of the start
        assert (ref_state["head.weight"] - _model(seed).state_dict()["head.weight"]).abs().max() > 1e-3


def test_train_step_reports_loss_and_counts():
    data = make_loader(_data(), batch_size=16, seed=0)
    accelerator = make_accelerator()
    learner = Learner(accelerator, student=_model(1), teacher=None, objective=build_objective("ce"), total_steps=3)
    window = next_window(epoch_batches(accelerator, prepare_loader(accelerator, data), 0, sampler=data.sampler), 2)
    before = learner.student.state_dict()["head.weight"].clone()
    stats = learner.train_step(window, step=0)
    assert stats.samples == 32 and 0 < stats.labelled < 32 and 0 <= stats.correct <= stats.labelled
    assert stats.loss > 0
    assert not torch.equal(before, learner.student.state_dict()["head.weight"])  # the optimizer stepped
