import numpy as np
import pytest
import torch

from transfuse.data import build_data
from transfuse.errors import TransfuseError


def test_npz_with_test_split(tmp_path):
    x = np.random.default_rng(0).normal(3.0, 2.0, (20, 4)).astype(np.float64)
    y = np.arange(20) % 3
    xt = np.ones((5, 4))
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=np.array([0, 1, 2, 0, 1]))
    d = build_data("tensors", {"path": str(tmp_path / "d.npz"), "standardize": "global"})
    assert d.num_classes == 3 and d.in_shape == (4,) and d.train.inputs.dtype == torch.float32
    assert abs(float(d.train.inputs.mean())) < 1e-5 and abs(float(d.train.inputs.std()) - 1) < 1e-5
    expected_test = (torch.ones(5, 4) - torch.from_numpy(x).float().mean()) / torch.from_numpy(x).float().std()
    assert torch.allclose(d.test.inputs, expected_test, atol=1e-5)
    assert d.train.labels.tolist() == y.tolist() and d.test.labels.tolist() == [0, 1, 2, 0, 1]


def test_pt_uint8_images_and_holdout(tmp_path):
    x = torch.randint(0, 256, (30, 1, 5, 5), dtype=torch.uint8)
    torch.save({"x": x, "y": torch.arange(30) % 3}, tmp_path / "d.pt")
    d = build_data("tensors", {"path": str(tmp_path / "d.pt"), "normalise": False, "test_fraction": 0.2, "num_classes": 4})
    assert d.num_classes == 4 and d.in_shape == (1, 5, 5) and len(d.train) == 24 and len(d.test) == 6
    assert torch.allclose(d.train.inputs, x[d.train.index].float() / 255)
    assert sorted(torch.cat([d.train.index, d.test.index]).tolist()) == list(range(30))


def test_token_ids_kept_as_integers(tmp_path):
    torch.save({"x": torch.randint(0, 100, (6, 8)), "y": torch.tensor([0, 1] * 3)}, tmp_path / "t.pt")
    d = build_data("tensors", {"path": str(tmp_path / "t.pt")})
    assert d.train.inputs.dtype == torch.int64


def _npz(tmp_path, **arrays):
    np.savez(tmp_path / "d.npz", **arrays)
    return {"path": str(tmp_path / "d.npz")}


def test_missing_file_and_extension(tmp_path):
    with pytest.raises(TransfuseError, match="does not exist"):
        build_data("tensors", {"path": str(tmp_path / "none.npz")})
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(TransfuseError, match="must end in .npz or .pt"):
        build_data("tensors", {"path": str(tmp_path / "d.csv")})
    with pytest.raises(TransfuseError, match="needs path"):
        build_data("tensors")


def test_wrong_keys(tmp_path):
    with pytest.raises(TransfuseError, match="has keys inputs, y; expected x and y"):
        build_data("tensors", _npz(tmp_path, inputs=np.zeros((2, 2)), y=np.zeros(2, int)))
    with pytest.raises(TransfuseError, match="x_test and y_test together"):
        build_data("tensors", _npz(tmp_path, x=np.zeros((2, 2)), y=np.zeros(2, int), x_test=np.zeros((2, 2))))


def test_labels_out_of_range_and_non_integer(tmp_path):
    with pytest.raises(TransfuseError, match="class id 5, out of range for num_classes=3"):
        build_data("tensors", {**_npz(tmp_path, x=np.zeros((2, 2)), y=np.array([0, 5])), "num_classes": 3})
    with pytest.raises(TransfuseError, match="negative class id -1"):
        build_data("tensors", _npz(tmp_path, x=np.zeros((2, 2)), y=np.array([0, -1])))
    with pytest.raises(TransfuseError, match="non-integer values such as 0.5"):
        build_data("tensors", _npz(tmp_path, x=np.zeros((2, 2)), y=np.array([0.5, 1.0])))
    with pytest.raises(TransfuseError, match="y_test in .* class id 7"):
        build_data("tensors", _npz(tmp_path, x=np.zeros((2, 2)), y=np.array([0, 1]), x_test=np.zeros((1, 2)), y_test=np.array([7])))


def test_inconsistent_lengths(tmp_path):
    with pytest.raises(TransfuseError, match="3 samples in x but 2 labels in y"):
        build_data("tensors", _npz(tmp_path, x=np.zeros((3, 2)), y=np.array([0, 1])))


def test_shapes_differ(tmp_path):
    with pytest.raises(TransfuseError, match="x_test samples have shape \\(3,\\) but x samples \\(2,\\)"):
        build_data("tensors", _npz(tmp_path, x=np.zeros((2, 2)), y=np.array([0, 1]), x_test=np.zeros((1, 3)), y_test=np.array([0])))
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros(2), np.zeros(3)
    np.savez(tmp_path / "r.npz", x=ragged, y=np.array([0, 1]))
    with pytest.raises(TransfuseError, match="object array"):
        build_data("tensors", {"path": str(tmp_path / "r.npz")})
    torch.save({"x": [torch.zeros(2), torch.zeros(3)], "y": torch.tensor([0, 1])}, tmp_path / "r.pt")
    with pytest.raises(TransfuseError, match="differ in shape"):
        build_data("tensors", {"path": str(tmp_path / "r.pt")})


class Evil:
    pass


def test_unsafe_pickle_refused(tmp_path):
    torch.save({"x": Evil(), "y": torch.tensor([0])}, tmp_path / "e.pt")
    with pytest.raises(TransfuseError, match="holds Python objects other than tensors"):
        build_data("tensors", {"path": str(tmp_path / "e.pt")})


def test_damaged_pt(tmp_path):
    (tmp_path / "d.pt").write_bytes(b"garbage")
    with pytest.raises(TransfuseError, match="could not read .* as a .pt file"):
        build_data("tensors", {"path": str(tmp_path / "d.pt")})
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(TransfuseError, match="holds a Tensor; save a dict"):
        build_data("tensors", {"path": str(tmp_path / "t.pt")})


def test_nan_inputs(tmp_path):
    with pytest.raises(TransfuseError, match="NaN"):
        build_data("tensors", _npz(tmp_path, x=np.array([[np.nan, 0.0], [1.0, 2.0]]), y=np.array([0, 1])))


def test_folder_as_path_says_folder(tmp_path):
    with pytest.raises(TransfuseError, match="is a folder"):
        build_data("tensors", {"path": str(tmp_path)})
