"""Task streams: class splits, task ids, and the domain transforms (permuted, rotated, noisy)."""
import pytest
import torch

from transfuse.continual import build_stream
from transfuse.errors import TransfuseError


def test_class_split_gives_disjoint_classes_and_only_their_samples():
    s = build_stream(scenario="class", dataset="digits", tasks=5)
    seen = set()
    for t in s.tasks:
        classes = set(t.classes.tolist())
        assert len(classes) == 2 and not classes & seen
        seen |= classes
        assert set(t.train.labels.unique().tolist()) == classes and set(t.test.labels.unique().tolist()) == classes
    assert seen == set(range(10)) and not s.task_ids_known
    assert build_stream(scenario="task", dataset="digits", tasks=5).task_ids_known


@pytest.mark.parametrize("transform", ["permuted", "rotated", "noisy"])
def test_domain_transforms_keep_task_zero_and_labels_and_change_later_tasks(transform):
    s = build_stream(scenario="domain", dataset="digits", tasks=3, transform=transform, seed=1)
    first, later = s.tasks[0], s.tasks[2]
    assert torch.equal(first.train.labels, later.train.labels)
    assert torch.allclose(first.train.inputs.float(), s.tasks[0].train.inputs.float())
    assert not torch.allclose(first.train.inputs.float(), later.train.inputs.float(), atol=1e-3)
    assert len(first.classes) == 10


def test_task_zero_is_the_data_set_itself():
    from transfuse.data import build_data

    raw = build_data("digits", {})
    for transform in ("permuted", "rotated", "noisy"):
        s = build_stream(scenario="domain", dataset="digits", tasks=3, transform=transform)
        assert torch.allclose(s.tasks[0].test.inputs.float(), raw.test.inputs.float(), atol=1e-5), transform


def test_permutation_is_shared_by_train_and_test_and_depends_on_the_seed():
    a = build_stream(scenario="domain", dataset="digits", tasks=2, transform="permuted", seed=0)
    b = build_stream(scenario="domain", dataset="digits", tasks=2, transform="permuted", seed=1)
    from transfuse.data import build_data

    raw = build_data("digits", {})
    flat_train, flat_test = raw.train.inputs.flatten(1), raw.test.inputs.flatten(1)
    moved_train, moved_test = a.tasks[1].train.inputs.flatten(1), a.tasks[1].test.inputs.flatten(1)
    # the same column permutation maps train and test: find it on train, apply it on test
    idx = torch.tensor([int(((flat_train - moved_train[:, j : j + 1]).abs().sum(0)).argmin()) for j in range(flat_train.shape[1])])
    assert torch.equal(flat_test[:, idx], moved_test)
    assert not torch.equal(a.tasks[1].train.inputs, b.tasks[1].train.inputs)


def test_noise_grows_with_the_task_and_differs_between_train_and_test():
    from transfuse.data import build_data

    raw = build_data("digits", {})
    s = build_stream(scenario="domain", dataset="digits", tasks=3, transform="noisy")
    stds = [float((t.train.inputs.float() - raw.train.inputs.float()).std()) for t in s.tasks]
    assert stds[0] == 0.0 and stds[1] == pytest.approx(0.25, rel=0.05) and stds[2] == pytest.approx(0.5, rel=0.05)
    noise_train = (s.tasks[1].train.inputs - raw.train.inputs).flatten()[:100]
    noise_test = (s.tasks[1].test.inputs - raw.test.inputs).flatten()[:100]
    assert not torch.allclose(noise_train, noise_test)


def test_rotation_needs_images_and_bad_scenarios_are_one_sentence():
    with pytest.raises(TransfuseError, match="unknown scenario"):
        build_stream(scenario="classes", dataset="digits")
    with pytest.raises(TransfuseError, match="needs images"):
        build_stream(scenario="domain", dataset="text_bow", tasks=2, transform="rotated",
                     params={"categories": ["noun.animal", "noun.plant"], "per_class": 20, "features": 64})
