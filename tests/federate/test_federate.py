"""The federate loop end to end on tiny Fashion-MNIST: learning, report, faults, bad input, and one
real Flower simulation that must give the in-process loop's numbers."""
import json
import os
import subprocess
import sys

import pytest

import transfuse
from transfuse.errors import TransfuseError
from transfuse.federate.api import run_method
from transfuse.federate.config import FederateConfig, MethodSpec

SMALL = {
    "data": {"name": "fashion_mnist", "params": {"train_size": 900, "test_size": 300}},
    "split": {"kind": "dirichlet", "alpha": 1.0},
    "clients": 3,
    "rounds": 2,
    "local": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "model": {"name": "mlp", "params": {"hidden": [32]}},
    "engine": "inprocess",
}


def _cfg(tmp_path, **over):
    return {**SMALL, "output": str(tmp_path / "out"), **over}


def test_methods_learn_and_the_report_is_written(tmp_path):
    cfg = _cfg(tmp_path, server_data=150, methods=[
        "fedavg",
        {"name": "fedavg", "aggregate": {"name": "ties", "params": {"density": 0.5}}},
        {"name": "fedprox", "params": {"mu": 0.1}},
        {"name": "feddf", "params": {"steps": 5}},
    ])
    summary = transfuse.federate(cfg)
    assert set(summary["methods"]) == {"fedavg", "fedavg+ties", "fedprox", "feddf"}
    for label, m in summary["methods"].items():
        assert m["final"]["global_acc"] > 0.3, label  # 10 classes: chance is 0.1
        assert len(m["curves"]["global_acc"]["mean"]) == 2
        assert set(m["per_client_local_acc"]) == {"0", "1", "2"}
    fedavg = summary["methods"]["fedavg"]["runs"][0]["history"]
    n_params = (784 * 32 + 32 + 32 * 10 + 10) * 4  # float32 bytes of the MLP
    assert all(h["bytes_down"] == 3 * n_params and h["bytes_up"] == 3 * n_params for h in fedavg)
    assert "distill_loss" in summary["methods"]["feddf"]["runs"][0]["history"][0]
    out = tmp_path / "out"
    assert {"results.json", "report.md", "accuracy.png"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "results.json").read_text())["methods"]["fedavg"]["seeds"] == 1
    with pytest.raises(TransfuseError, match="overwrite=true"):
        transfuse.federate(cfg)


def test_runs_are_seeded_and_a_crashed_client_is_dropped(tmp_path):
    cfg = FederateConfig(**_cfg(tmp_path))
    a = run_method(cfg, MethodSpec(name="fedavg"), 0)["history"]
    b = run_method(cfg, MethodSpec(name="fedavg"), 0)["history"]
    assert [h["global_acc"] for h in a] == [h["global_acc"] for h in b]
    c = run_method(cfg, MethodSpec(name="fedavg"), 0, fail=lambda r, k: r == 1 and k == 0)["history"]
    assert c[0]["dropped"][0]["client"] == 0 and set(c[0]["clients"]) == {"1", "2"}
    assert set(c[1]["clients"]) == {"0", "1", "2"} and c[0]["bytes_up"] < a[0]["bytes_up"]


@pytest.mark.parametrize("over,message", [
    ({"methods": ["fedavgg"]}, "Did you mean"),
    ({"methods": ["feddf"]}, "server_data"),
    ({"aggregate": {"name": "fisher"}}, "statistics over data"),
    ({"methods": ["fedavg", "fedavg"]}, "share the label"),
    ({"clients_per_round": 5}, "exceeds clients"),
])
def test_bad_recipes_fail_before_training(tmp_path, over, message):
    with pytest.raises(TransfuseError, match=message):
        transfuse.federate(_cfg(tmp_path, **over))
    assert not (tmp_path / "out").exists()


def test_without_flower_the_command_says_how_to_install(monkeypatch):
    from transfuse.federate.flower import require_flower

    monkeypatch.setitem(sys.modules, "flwr", None)
    with pytest.raises(TransfuseError, match=r"pip install 'transfuse\[federated\]'"):
        require_flower()


def test_cli_error_is_one_line(run_cli, tmp_path):
    proc = run_cli("federate", "federate_dirichlet", "methods=[fedavgg]", f"output={tmp_path / 'o'}")
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert "fedavg" in proc.stderr


def test_shipped_recipe_loads():
    from transfuse.federate.api import check_config, load_federate_config

    from pathlib import Path

    import transfuse.recipes

    cfg = load_federate_config(Path(transfuse.recipes.__file__).parent / "configs" / "federate_dirichlet.yaml")
    check_config(cfg)
    assert cfg.engine == "flower" and len(cfg.method_specs()) == 4


def test_knfu_targets_come_from_the_most_similar_neighbours():
    import torch
    from torch import nn

    from transfuse.federate.methods import build_method

    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits.expand(len(x), -1)

    a, b, c = torch.tensor([[4.0, 0.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    knfu = build_method("knfu", {"beta": 10.0, "neighbours": 1})
    knfu.server_transfer(None, [Fixed(a), Fixed(b), Fixed(c)], torch.zeros(5, 1), torch.Generator(), [7, 8, 9])
    # client 7's nearest neighbour is 8 (similar predictions), not 9
    torch.testing.assert_close(knfu.targets[7], b.log_softmax(-1).expand(5, -1))
    torch.testing.assert_close(knfu.targets[9], b.log_softmax(-1).expand(5, -1))
    assert set(knfu.targets) == {7, 8, 9}


def test_knfu_runs_in_process(tmp_path):
    cfg = FederateConfig(**_cfg(tmp_path, server_data=100))
    h = run_method(cfg, MethodSpec(name="knfu", params={"steps": 3}), 0)["history"]
    assert "knfu_mean_kl" in h[0] and h[-1]["global_acc"] > 0.3


def test_a_killed_server_resumes_to_the_same_final_weights(tmp_path):
    import torch

    from transfuse.federate.federation import build_federation
    from transfuse.federate.inprocess import run_inprocess
    from transfuse.federate.config import AggregateSpec

    cfg = FederateConfig(**_cfg(tmp_path, rounds=3, server_data=100))
    spec = MethodSpec(name="knfu", params={"steps": 2})  # state beyond the weights: per-client targets
    fed = build_federation(cfg, 0)
    whole = run_inprocess(fed, spec, AggregateSpec())

    class Killed(BaseException):
        pass

    def kill(r, k):
        if r == 3:
            raise Killed  # the server dies mid-round 3 (not a client fault: nothing catches it)
        return False

    with pytest.raises(Killed):
        run_inprocess(fed, spec, AggregateSpec(), fail=kill, checkpoint=tmp_path / "ckpt")
    assert len(json.loads((tmp_path / "ckpt" / "history.json").read_text())) == 2
    resumed = run_inprocess(fed, spec, AggregateSpec(), checkpoint=tmp_path / "ckpt")
    for k, v in whole.state.items():
        torch.testing.assert_close(resumed.state[k], v, rtol=0, atol=0)
    assert [h["global_acc"] for h in resumed.history] == [h["global_acc"] for h in whole.history]


def test_mk_mmd_is_zero_for_one_sample_set_and_grows_with_shift():
    import torch

    from transfuse.federate.methods.fedka import mk_mmd

    a = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    assert abs(float(mk_mmd(a, a))) < 1e-5
    assert float(mk_mmd(a, a + 0.5)) < float(mk_mmd(a, a + 3.0))


def test_fedka_adapts_on_a_rotated_target(tmp_path):
    cfg = FederateConfig(**_cfg(tmp_path, split={"kind": "domain", "domains": [0, 30]}, server_data=100, target_rotate=60))
    h = run_method(cfg, MethodSpec(name="fedka", params={"steps": 3}), 0)["history"]
    assert all(0 <= x["pseudo_labelled"] <= 1 and 0 <= x["target_acc"] <= 1 for x in h)
    assert h[-1]["global_acc"] > 0.3
    with pytest.raises(TransfuseError, match="target_rotate"):
        transfuse.federate(_cfg(tmp_path, methods=["fedka"], server_data=100))


def test_the_flower_app_resolves_a_recipe_from_its_run_config():
    pytest.importorskip("flwr")
    from pathlib import Path

    import tomllib

    import transfuse.recipes
    from transfuse.federate import app

    assert callable(app.server_app) and callable(app.client_app)  # module-level: what `flwr run` loads
    shipped = Path(app.__file__).parent / "flower_app" / "pyproject.toml"
    comps = tomllib.loads(shipped.read_text())["tool"]["flwr"]["app"]["components"]
    assert comps == {"serverapp": "transfuse.federate.app:server_app", "clientapp": "transfuse.federate.app:client_app"}
    recipe = str(Path(transfuse.recipes.__file__).parent / "configs" / "federate_dirichlet.yaml")
    cfg, spec, agg, seed = app.resolve({"recipe": recipe, "overrides": "clients=4", "method": "ties", "seed": -1})
    assert (cfg.clients, spec.name, agg.name, seed) == (4, "fedavg", "ties", 0)
    with pytest.raises(TransfuseError, match="its methods: fedavg, ties"):
        app.resolve({"recipe": recipe, "method": "tie"})
