import pytest
import torch

from transfuse.data import IndexedTensors
from transfuse.data._common import apply_labelled, check_labels, stratified_positions, stratified_split
from transfuse.errors import TransfuseError


def test_stratified_positions_hand_example():
    # counts 6, 3, 1 and n=5: exact shares 3, 1.5, 0.5 -> floors 3, 1, 0; the one left over goes
    # to the largest remainder, a tie between classes 1 and 2 broken by the smaller id -> 3, 2, 0.
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    pos = stratified_positions(labels, 5, torch.Generator().manual_seed(0))
    assert len(pos) == 5 and len(set(pos.tolist())) == 5
    assert torch.bincount(labels[pos], minlength=3).tolist() == [3, 2, 0]
    assert torch.equal(pos, pos.sort().values)


def test_stratified_positions_depends_on_seed_only():
    labels = torch.arange(100) % 4
    a = stratified_positions(labels, 20, torch.Generator().manual_seed(1))
    b = stratified_positions(labels, 20, torch.Generator().manual_seed(1))
    c = stratified_positions(labels, 20, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(labels[a]).tolist() == [5, 5, 5, 5]


def test_stratified_split_is_a_partition():
    labels = torch.arange(50) % 5
    train, test = stratified_split(labels, 0.2, torch.Generator().manual_seed(0))
    assert sorted(train.tolist() + test.tolist()) == list(range(50))
    assert torch.bincount(labels[test]).tolist() == [2, 2, 2, 2, 2]


def test_apply_labelled_masks_or_drops():
    ds = IndexedTensors(torch.randn(40, 3), torch.arange(40) % 4, torch.arange(100, 140))
    masked = apply_labelled(ds, 8, True, torch.Generator().manual_seed(0))
    assert len(masked) == 40 and int((masked.labels >= 0).sum()) == 8
    assert torch.bincount(masked.labels[masked.labels >= 0]).tolist() == [2, 2, 2, 2]
    kept = apply_labelled(ds, 8, False, torch.Generator().manual_seed(0))
    assert len(kept) == 8
    assert torch.equal(kept.index, masked.index[masked.labels >= 0])  # same samples, ids unchanged
    assert torch.equal(kept.labels, (kept.index - 100) % 4)
    with pytest.raises(TransfuseError, match="labelled must be between 1 and the 40"):
        apply_labelled(ds, 41, True, torch.Generator())


@pytest.mark.parametrize(
    "labels, num_classes, match",
    [
        (torch.tensor([0.0, 1.5]), None, "non-integer"),
        (torch.tensor([0, -2]), None, "negative class id -2"),
        (torch.tensor([0, 3]), 3, "class id 3, out of range for num_classes=3"),
        (torch.zeros(2, 2, dtype=torch.long), None, "shape"),
        (torch.tensor([True, False]), None, "integer class ids"),
    ],
)
def test_check_labels_refuses(labels, num_classes, match):
    with pytest.raises(TransfuseError, match=match):
        check_labels(labels, "y", num_classes)


def test_check_labels_accepts_integral_floats():
    assert check_labels(torch.tensor([0.0, 2.0]), "y", 3).tolist() == [0, 2]
