"""Aggregation (fedavg and merge methods on client deltas) and the client splits, on small tensors."""
import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.federate.aggregate import aggregate
from transfuse.federate.splits import split_clients


def _sds(seed=0, K=3):
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(4, 5, generator=g), "b": torch.randn(5, generator=g), "steps": torch.tensor(3)}
    clients = [{k: (v + 0.1 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v.clone() for k, v in base.items()}
               for _ in range(K)]
    return base, clients


def test_fedavg_is_the_sample_weighted_mean():
    base, clients = _sds()
    out = aggregate(base, clients, [1, 2, 5])
    for k in ("w", "b"):
        ref = (clients[0][k] + 2 * clients[1][k] + 5 * clients[2][k]) / 8
        torch.testing.assert_close(out[k], ref)
    assert int(out["steps"]) == 3


def test_task_arithmetic_on_deltas():
    base, clients = _sds(1)
    a = aggregate(base, clients, [3, 1, 1])
    b = aggregate(base, clients, [3, 1, 1], name="task_arithmetic", params={"normalize": True})
    c = aggregate(base, clients, [1, 1, 1], name="task_arithmetic", params={"scale": 0.5})
    for k in ("w", "b"):
        torch.testing.assert_close(a[k], b[k])  # normalised task arithmetic is FedAvg
        ref = base[k] + 0.5 * sum(cl[k] - base[k] for cl in clients)  # equal clients: weight 1 each
        torch.testing.assert_close(c[k], ref)


def test_ties_on_deltas_follows_its_sign_election():
    base = {"w": torch.zeros(4)}
    clients = [{"w": torch.tensor([3.0, -1.0, 0.5, 2.0])}, {"w": torch.tensor([-2.0, -0.2, 1.0, 1.0])}]
    # the merge tests' hand example (tests/merge/test_methods.py), run through the in-memory aggregation
    out = aggregate(base, clients, [1, 1], name="ties", params={"density": 0.5, "topk": "per_tensor"})
    # per_tensor keeps exactly int(n * density) = 2 entries per client (mergekit), so client 0's -1.0 is pruned
    torch.testing.assert_close(out["w"], torch.tensor([3.0, 0.0, 1.0, 1.5]))


@pytest.mark.parametrize("name,params", [("dare", {"density": 0.5}), ("ties", {"density": 0.3}), ("pcb", {}), ("breadcrumbs", {})])
def test_every_pass_based_method_runs_in_memory(name, params):
    base, clients = _sds(2)
    out = aggregate(base, clients, [1, 1, 1], name=name, params=params, seed=3)
    assert out["w"].shape == base["w"].shape and torch.isfinite(out["w"]).all()
    assert not torch.equal(out["w"], base["w"])


def test_bad_aggregations_are_one_sentence():
    base, clients = _sds()
    with pytest.raises(TransfuseError, match="Did you mean"):
        aggregate(base, clients, [1, 1, 1], name="tiess")
    with pytest.raises(TransfuseError, match="statistics over data"):
        aggregate(base, clients, [1, 1, 1], name="fisher")
    with pytest.raises(TransfuseError, match="no parameter"):
        aggregate(base, clients, [1, 1, 1], name="ties", params={"densty": 0.5})


def _labels(n=1000, C=10):
    return torch.arange(n) % C


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards", "domain"])
def test_splits_are_disjoint_seeded_and_cover(kind):
    y = _labels()
    parts = split_clients(y, 10, kind=kind, alpha=0.5, shards=2, generator=torch.Generator().manual_seed(0))
    again = split_clients(y, 10, kind=kind, alpha=0.5, shards=2, generator=torch.Generator().manual_seed(0))
    allpos = torch.cat(parts)
    assert len(allpos.unique()) == len(allpos) == len(y)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))


def test_dirichlet_skew_grows_as_alpha_falls():
    y = _labels(5000)

    def skew(alpha):  # mean over clients of the largest class share
        parts = split_clients(y, 10, kind="dirichlet", alpha=alpha, generator=torch.Generator().manual_seed(1))
        return sum(float(torch.bincount(y[p], minlength=10).max()) / len(p) for p in parts) / 10

    assert skew(100.0) < 0.2 < skew(1.0) < skew(0.1)


def test_shards_give_each_client_few_classes():
    y = _labels(1000)
    parts = split_clients(y, 10, kind="shards", shards=2, generator=torch.Generator().manual_seed(0))
    assert all(len(y[p].unique()) <= 2 for p in parts)


def test_bad_splits():
    with pytest.raises(TransfuseError, match="unknown split"):
        split_clients(_labels(), 3, kind="random")
    with pytest.raises(TransfuseError, match="cannot give"):
        split_clients(_labels(10), 6)
