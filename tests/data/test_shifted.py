"""The `shifted` data set: rotated / noised domains of another registered image data set."""
import pytest
import torch

from transfuse.data import build_data
from transfuse.data.shifted import rotate_images
from transfuse.errors import TransfuseError


def test_rotation_by_90_degrees_is_a_transpose_flip_and_360_is_the_identity():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    turned = rotate_images(img, 90.0, fill=0.0)
    assert torch.allclose(turned, torch.rot90(img, k=1, dims=(2, 3)), atol=1e-4) or torch.allclose(
        turned, torch.rot90(img, k=-1, dims=(2, 3)), atol=1e-4
    )
    assert torch.allclose(rotate_images(img, 360.0, fill=0.0), img, atol=1e-4)


def test_corners_are_filled_with_the_background():
    img = torch.full((1, 1, 8, 8), 5.0)
    out = rotate_images(img, 45.0, fill=-1.0)
    assert out[0, 0, 0, 0] == pytest.approx(-1.0, abs=1e-4) and out[0, 0, 4, 4] == pytest.approx(5.0, abs=1e-4)


def test_shifted_digits_keeps_labels_and_ids_and_changes_inputs_and_fingerprint():
    base = build_data("digits", {"seed": 0})
    rot = build_data("shifted", {"base": "digits", "base_params": {"seed": 0}, "rotate": 30})
    noisy = build_data("shifted", {"base": "digits", "base_params": {"seed": 0}, "noise": 0.5, "seed": 1})
    for d in (rot, noisy):
        assert torch.equal(d.train.labels, base.train.labels) and torch.equal(d.test.index, base.test.index)
        assert not torch.allclose(d.train.inputs, base.train.inputs)
        assert d.fingerprint != base.fingerprint and d.num_classes == 10
    assert (noisy.train.inputs - base.train.inputs).std().item() == pytest.approx(0.5, rel=0.05)
    again = build_data("shifted", {"base": "digits", "base_params": {"seed": 0}, "noise": 0.5, "seed": 1})
    assert torch.equal(again.train.inputs, noisy.train.inputs)


def test_bad_shifts_are_clear_errors():
    with pytest.raises(TransfuseError, match="must be >= 0"):
        build_data("shifted", {"base": "digits", "noise": -1})
    with pytest.raises(TransfuseError, match="plain base"):
        build_data("shifted", {"base": "shifted"})
