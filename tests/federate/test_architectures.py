"""Several client architectures: weights are averaged only within one architecture, knowledge crosses
architectures through logits (feddf, knfu); weight aggregation across architectures is refused."""
import pytest
import torch

import transfuse
from transfuse.errors import TransfuseError
from transfuse.federate.api import run_method
from transfuse.federate.config import FederateConfig, MethodSpec
from transfuse.federate.federation import Server, build_federation

TWO = [{"name": "mlp", "params": {"hidden": [32]}}, {"name": "mlp", "params": {"hidden": [16, 16]}}]
BASE = {
    "data": {"name": "fashion_mnist", "params": {"train_size": 900, "test_size": 300}},
    "split": {"kind": "iid"}, "clients": 3, "rounds": 2, "server_data": 150, "model": TWO,
    "local": {"epochs": 1, "batch_size": 32, "lr": 0.05},
}


@pytest.mark.parametrize("method", [{"name": "feddf", "params": {"steps": 5}}, {"name": "knfu", "params": {"steps": 3}}])
def test_logit_methods_train_one_global_model_per_architecture(tmp_path, method):
    cfg = FederateConfig(**BASE, output=str(tmp_path / "o"))
    fed = build_federation(cfg, 0)
    assert [fed.arch_of(k) for k in range(3)] == [0, 1, 0]
    h = run_method(cfg, MethodSpec(**method), 0)["history"]
    assert len(h[-1]["global_acc_by_model"]) == 2
    assert all(acc > 0.3 for acc in h[-1]["global_acc_by_model"])  # chance is 0.1: both architectures learn
    assert h[-1]["global_acc"] == h[-1]["global_acc_by_model"][0]
    one = sum(p.numel() for p in fed.new_model(0).parameters()) * 4
    two = sum(p.numel() for p in fed.new_model(1).parameters()) * 4
    weights = 2 * one + two  # each client sent its own architecture (knfu adds its soft predictions)
    assert h[0]["bytes_up"] == weights if method["name"] == "feddf" else h[0]["bytes_up"] > weights


def test_each_architecture_is_averaged_from_its_own_clients_only(tmp_path):
    cfg = FederateConfig(**BASE, output=str(tmp_path / "o"))
    fed = build_federation(cfg, 0)
    server = Server(fed, MethodSpec(name="feddf", params={"steps": 0}), cfg.aggregate)
    states = server.states
    moved = [{k: v + (c + 1) for k, v in states[fed.arch_of(c)].items()} for c in range(3)]  # client c adds c+1 everywhere
    server.round(1, [(c, moved[c], 10, {"train_loss": 0.0, "local_acc": 0.5}) for c in range(3)])
    new = server.states
    for k, v in new[0].items():  # architecture 0: clients 0 and 2, equal sizes: + (1 + 3) / 2
        torch.testing.assert_close(v, states[0][k] + 2.0)
    for k, v in new[1].items():  # architecture 1: client 1 alone
        torch.testing.assert_close(v, states[1][k] + 2.0)
    assert set(new[0]) != set(new[1])  # two different architectures indeed


@pytest.mark.parametrize("method", ["fedavg", "fedprox"])
def test_weight_aggregation_across_architectures_is_one_clear_error(tmp_path, method):
    with pytest.raises(TransfuseError, match=r"cannot be averaged across 2 different client architectures.*feddf, knfu"):
        transfuse.federate({**BASE, "methods": [method], "output": str(tmp_path / "o")})
    assert not (tmp_path / "o").exists()


def test_cli_refuses_weight_aggregation_across_architectures(run_cli, tmp_path):
    proc = run_cli("federate", "federate_dirichlet", "engine=inprocess",
                   'model=[{name: mlp, params: {hidden: [8]}}, {name: mlp, params: {hidden: [4]}}]', f"output={tmp_path / 'o'}")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert "architectures" in proc.stderr
