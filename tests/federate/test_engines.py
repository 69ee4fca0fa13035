"""The engines with real processes: the Flower simulation (Ray) resuming a checkpoint with KnFu's
per-client state, the deployment engine (a SuperLink and SuperNodes on localhost) with a client that
hangs past federation.client_timeout and a client process killed mid-round, and a server killed with
SIGKILL that resumes to the same final weights. Each starts processes: few, and slow-marked."""
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file

from transfuse.federate.api import run_method
from transfuse.federate.config import FederateConfig, MethodSpec
from transfuse.federate.federation import FAULTS_ENV

CI_SMALL = os.environ.get("TRANSFUSE_CI_SMALL") == "1"

SMALL = {
    "data": {"name": "fashion_mnist", "params": {"train_size": 600 if CI_SMALL else 900, "test_size": 200}},
    "split": {"kind": "dirichlet", "alpha": 1.0}, "clients": 3, "rounds": 3, "server_data": 100,
    "local": {"epochs": 1, "batch_size": 32, "lr": 0.05}, "model": {"name": "mlp", "params": {"hidden": [32]}},
}
KNFU = MethodSpec(name="knfu", params={"steps": 3})


def _wait_for(path, timeout):
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


def _client_node(clientapp, parent):
    """The ClientApp process, the SuperExec that launched it and the SuperNode that SuperExec serves
    (flwr 1.42: ``flower-superexec ... --parent-pid SUPERNODE``)."""
    pids = [parent, clientapp]
    try:
        argv = open(f"/proc/{parent}/cmdline", "rb").read().split(b"\0")
        if b"--parent-pid" in argv:
            pids.insert(0, int(argv[argv.index(b"--parent-pid") + 1]))
    except OSError:
        pass
    return pids


def _same_state(a, b):
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.fixture
def one_torch_thread():
    """Ray runs a 1-CPU actor's torch on one thread (OMP_NUM_THREADS=1); in-process runs compared with it
    bit for bit must too, or their float reductions differ in the last bit on a multi-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_flower_simulation_resumes_knfu_to_the_inprocess_weights(tmp_path, monkeypatch, one_torch_thread):
    """Rounds 1 in process, checkpointed; rounds 2-3 under run_simulation from that checkpoint: KnFu's
    targets go from the checkpoint to clients the strategy does not know yet (round 2), then to known
    ones (round 3); client 1 crashes in round 3 on both engines and is dropped; the final weights
    equal an unbroken in-process run's, bit for bit."""
    pytest.importorskip("flwr")
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"crash": ["3:1"]}))
    ckpt = tmp_path / "ckpt"
    whole = run_method(FederateConfig(**SMALL, checkpoint_dir=str(tmp_path / "whole")), KNFU, 0)["history"]
    run_method(FederateConfig(**{**SMALL, "rounds": 1}, checkpoint_dir=str(ckpt)), KNFU, 0)
    assert len(json.loads((ckpt / "knfu-seed0" / "history.json").read_text())) == 1
    flower = run_method(FederateConfig(**SMALL, checkpoint_dir=str(ckpt), engine="flower", flower={"num_cpus": 2}), KNFU, 0)["history"]
    assert [h["round"] for h in flower] == [1, 2, 3]
    assert [d["client"] for d in flower[2]["dropped"]] == [d["client"] for d in whole[2]["dropped"]] == [1]
    assert set(flower[2]["clients"]) == {"0", "2"} and "crashed" in flower[2]["dropped"][0]["error"]
    assert [h["global_acc"] for h in flower] == [h["global_acc"] for h in whole]
    assert [h["mean_local_acc"] for h in flower] == [h["mean_local_acc"] for h in whole]
    _same_state(load_file(str(ckpt / "knfu-seed0" / "state.safetensors")), load_file(str(tmp_path / "whole" / "knfu-seed0" / "state.safetensors")))


@pytest.mark.slow
def test_deployment_drops_a_hung_and_a_killed_client_and_goes_on(tmp_path, monkeypatch):
    """Real processes: SuperLink + 3 SuperNodes, two client architectures (feddf). In round 2 client 1
    hangs past client_timeout and client 2's ClientApp, SuperExec and SuperNode are killed (SIGKILL) mid-round;
    round 2 aggregates client 0 alone, round 3 runs without client 2."""
    pytest.importorskip("flwr")
    timeout = 30.0
    trace = tmp_path / "trace"
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"hang": {"2:1": timeout + 5, "2:2": 600}, "trace": str(trace)}))
    two = [{"name": "mlp", "params": {"hidden": [32]}}, {"name": "mlp", "params": {"hidden": [16, 16]}}]
    rounds = 2 if CI_SMALL else 3  # each round with a dead client waits the whole client_timeout
    cfg = FederateConfig(**{**SMALL, "model": two, "rounds": rounds}, engine="deployment", federation={"client_timeout": timeout})
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_method, cfg, MethodSpec(name="feddf", params={"steps": 3}), 0)
        marker = trace / "started-r2-c2"
        _wait_for(marker, 300)
        clientapp, superexec = map(int, marker.read_text().split())
        node = _client_node(clientapp, superexec)
        for pid in node:  # the client's processes, started by this test's run
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        h = run.result(timeout=600)["history"]
    assert len(node) == 3  # the SuperNode was found and killed too
    assert [x["round"] for x in h] == list(range(1, rounds + 1))
    assert set(h[0]["clients"]) == {"0", "1", "2"} and h[0]["dropped"] == []
    assert set(h[1]["clients"]) == {"0"}
    assert sorted(d["client"] for d in h[1]["dropped"]) == [1, 2]
    assert all("client_timeout" in d["error"] for d in h[1]["dropped"])
    assert len(h[-1]["global_acc_by_model"]) == 2 and h[-1]["global_acc"] > 0.2
    if rounds == 3:
        assert "0" in h[2]["clients"] and "2" not in h[2]["clients"]


@pytest.mark.slow
def test_a_server_killed_with_sigkill_resumes_to_the_same_final_weights(tmp_path):
    """The command (in-process engine) is killed with SIGKILL mid-round 3; rerun, it resumes after
    round 2 from its checkpoint and ends on an unbroken run's weights and KnFu state."""
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**SMALL, "methods": [KNFU.model_dump()], "engine": "inprocess",
                                      "checkpoint_dir": str(tmp_path / "ckpt"), "output": str(tmp_path / "out")}))
    trace = tmp_path / "trace"
    argv = [sys.executable, "-m", "transfuse.cli", "federate", str(recipe)]
    env = {**os.environ, FAULTS_ENV: json.dumps({"hang": {"3:0": 600}, "trace": str(trace)})}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(trace / "started-r3-c0", 120)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(json.loads((tmp_path / "ckpt" / "knfu-seed0" / "history.json").read_text())) == 2
    env.pop(FAULTS_ENV)
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    whole = tmp_path / "whole"
    run_method(FederateConfig(**SMALL, checkpoint_dir=str(whole)), KNFU, 0)
    resumed = load_file(str(tmp_path / "ckpt" / "knfu-seed0" / "state.safetensors"))
    assert any(k.startswith("method.targets.") for k in resumed)
    _same_state(resumed, load_file(str(whole / "knfu-seed0" / "state.safetensors")))
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [h["round"] for h in summary["methods"]["knfu"]["runs"][0]["history"]] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.skipif(CI_SMALL, reason="starts a SuperLink and its SuperNodes twice (about 2 min); runs at full size only")
def test_a_killed_deployment_serverapp_resumes_to_the_same_final_weights(tmp_path, monkeypatch):
    """Real processes: the ServerApp process is killed (SIGKILL) while it waits in round 3; the run
    fails with one sentence, and a second `engine=deployment` run (a fresh SuperLink and SuperNodes)
    resumes after round 2 from the checkpoint to an unbroken in-process run's weights and KnFu state."""
    pytest.importorskip("flwr")
    from transfuse.errors import TransfuseError

    trace = tmp_path / "trace"
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"hang": {"3:0": 45}, "trace": str(trace)}))
    cfg = FederateConfig(**SMALL, engine="deployment", checkpoint_dir=str(tmp_path / "ckpt"), federation={"client_timeout": 120})
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_method, cfg, KNFU, 0)
        _wait_for(trace / "started-r3-c0", 300)  # the server has saved round 2 and waits for round 3's replies
        serverapp = int((trace / "saved-r2").read_text().split()[0])
        os.kill(serverapp, signal.SIGKILL)
        with pytest.raises(TransfuseError):
            run.result(timeout=600)
    assert len(json.loads((tmp_path / "ckpt" / "knfu-seed0" / "history.json").read_text())) == 2
    monkeypatch.delenv(FAULTS_ENV)
    h = run_method(cfg, KNFU, 0)["history"]
    assert [x["round"] for x in h] == [1, 2, 3]
    whole = run_method(FederateConfig(**SMALL, checkpoint_dir=str(tmp_path / "whole")), KNFU, 0)["history"]
    assert [x["global_acc"] for x in h] == [x["global_acc"] for x in whole]
    _same_state(load_file(str(tmp_path / "ckpt" / "knfu-seed0" / "state.safetensors")),
                load_file(str(tmp_path / "whole" / "knfu-seed0" / "state.safetensors")))
