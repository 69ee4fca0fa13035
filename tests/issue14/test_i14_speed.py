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


def test_train_equals_a_plain_pytorch_loop_bit_for_bit():
    """The loop with its shortcuts is a plain loop: same order, kd loss, AdamW, zero_grad; same weights and accuracy."""
    import torch.nn.functional as F

    data = _data()
    data = IndexedTensors(data.inputs, data.labels.clamp_min(0))  # fully labelled: the fast cross-entropy path
    teacher_logits = torch.randn(90, 3, generator=torch.Generator().manual_seed(1)) * 2  # (N, 3)

    class Lookup:
        def __call__(self, batch):
            from transfuse.signals import Outputs

            return Outputs(logits=teacher_logits[batch.index])

    def student():
        torch.manual_seed(3)
        return build_model("mlp", {"hidden": [8]}, in_shape=(1, 4, 4), num_classes=3)

    loader = make_loader(data, batch_size=16, seed=4)
    ours = train(student=student(), teacher=Lookup(), objective=build_objective("kd", {"temperature": 2.0, "alpha": 0.7}),
                 train_loader=loader, epochs=2, lr=1e-2, seed=4, progress=False, stall_steps=0)

    torch.manual_seed(4)
    model = student()
    torch.manual_seed(4)  # train() seeds before it builds anything
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    sampler = EpochSampler(90, seed=4)
    correct = labelled = 0
    for epoch in range(2):
        torch.empty((), dtype=torch.int64).random_()  # the DataLoader's one draw per epoch
        sampler.set_epoch(epoch)
        order = sampler.order()
        correct = 0
        for start in range(0, 90 - 90 % 16, 16):
            idx = order[start : start + 16]
            s = model(data.inputs[idx])  # (16, 3)
            logp_s, logp_t = F.log_softmax(s / 2.0, -1), F.log_softmax(teacher_logits[idx] / 2.0, -1)
            soft = (logp_t.exp() * (logp_t - logp_s)).sum(-1).mean() * 4.0
            loss = 0.7 * soft + 0.3 * F.cross_entropy(s, data.labels[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            correct += int((s.argmax(-1) == data.labels[idx]).sum())
    for (k, v), (_, w) in zip(ours.student.state_dict().items(), model.state_dict().items()):
        assert torch.equal(v, w), k
    assert ours.history[-1]["train_accuracy"] == correct / (16 * 5)


def test_accuracy_counts_read_in_one_go_equal_per_step_counts():
    from transfuse.distill.loop import StepStats, _sum_steps

    g = torch.Generator().manual_seed(0)
    steps, want_correct, want_labelled = [], 0, 0
    for step in range(7):
        predicted, labels = torch.randint(0, 4, (10,), generator=g), torch.randint(-1, 4, (10,), generator=g)
        stats = StepStats(step=step)
        stats.add(torch.tensor(0.5), 1, 1)
        stats.add_predictions(predicted, labels)
        want_correct += int(((predicted == labels) & (labels >= 0)).sum())
        want_labelled += int((labels >= 0).sum())
        steps.append(stats)
    early = steps[2].correct  # one step read before the sums (a progress bar does this): counted once, not twice
    assert 0 <= early <= steps[2].labelled <= 10
    loss, correct, labelled = _sum_steps(list(steps), 0.0, 0, 0)
    assert (correct, labelled) == (want_correct, want_labelled) and loss == 3.5


def test_cpu_seeding_equals_torch_manual_seed():
    from transfuse.seeding import seed_torch

    seed_torch(11)
    a = torch.rand(5)
    torch.manual_seed(11)
    assert torch.equal(a, torch.rand(5))


def test_batch_ids_are_the_samples_ids_with_and_without_a_subset():
    data = _data()
    full = data.__getitems__(torch.tensor([5, 2, 7]))
    assert full["index"].tolist() == [5, 2, 7]
    sub = data.subset(torch.tensor([10, 20, 30, 40]))
    assert sub.__getitems__(torch.tensor([3, 0]))["index"].tolist() == [40, 10]
