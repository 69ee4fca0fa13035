"""The `domains` data set: train domains pooled with ids i*K+d, an unseen test domain, one domain for an expert."""
import pytest
import torch

from transfuse.data import build_data
from transfuse.errors import TransfuseError

DIGITS = {"base": "digits", "base_params": {"seed": 0}}


def test_domains_share_the_images_out_and_tag_each_sample():
    d = build_data("domains", {**DIGITS, "train": [{"rotate": 0}, {"rotate": 40}], "test": {"rotate": 80}})
    base = build_data("digits", {"seed": 0})
    assert len(d.train) == len(base.train) and len(d.test) == len(base.test)
    assert len(set(d.train.index.tolist())) == len(d.train)
    counts = (d.train.index % 2).bincount().tolist()
    assert abs(counts[0] - counts[1]) <= 1
    assert not torch.allclose(d.test.inputs, base.test.inputs)  # the unseen domain is rotated
    one = build_data("domains", {**DIGITS, "train": [{"rotate": 0}, {"rotate": 40}], "test": {"rotate": 80}, "domain": 1})
    pooled = {int(i): x for i, x in zip(d.train.index, d.train.inputs)}
    assert (one.train.index % 2 == 1).all()
    assert all(torch.equal(pooled[int(i)], x) for i, x in zip(one.train.index, one.train.inputs))
    assert torch.equal(one.test.inputs, d.test.inputs)


def test_digits_as_another_domain_beside_mnist():
    d = build_data("domains", {"base": "digits", "base_params": {"size": 28}, "train": [{}], "test": {"base": "digits", "base_params": {"size": 28}, "noise": 0.5}})
    assert d.in_shape == (1, 28, 28)


@pytest.mark.parametrize("params, match", [
    ({"train": [{"rotat": 10}]}, "unknown keys \\['rotat'\\]"),
    ({"train": []}, "at least one train domain"),
    ({"domain": 5}, "3 train domains"),
    ({"train": [{}], "test": {"base": "digits"}}, "differ in input shape"),
])
def test_bad_domains_say_what_to_fix(params, match):
    with pytest.raises(TransfuseError, match=match):
        build_data("domains", {**DIGITS, **params} if "base" not in params.get("test", {}) else {"base": "mnist5k", **params})
