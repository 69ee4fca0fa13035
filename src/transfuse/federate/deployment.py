"""engine=deployment: real processes on localhost. The command starts a SuperLink (``flower-superlink``)
and one SuperNode per client (``flower-supernode --node-config "partition-id=K num-partitions=N"``),
submits the shipped Flower App (``flower_app/pyproject.toml``, components in ``app.py``) with
``flwr run`` and the recipe as its run config, waits for the ServerApp's final state, and stops the
processes it started. Nothing leaves localhost; ports are picked free.

The manual equivalent (flwr 1.42 serves the SuperLink's Fleet, Control and Runtime APIs on one
HTTP port, 8000 by default): ``flower-superlink --insecure``; per client ``flower-supernode --insecure
--superlink 127.0.0.1:8000 --port 9094 --node-config "partition-id=0 num-partitions=N"`` (a port
each); a connection in ``$FLWR_HOME/config.toml`` (``[superlink.local-deployment]`` with
``address = "127.0.0.1:8000"`` and ``insecure = true``); then ``flwr run <transfuse>/federate/flower_app
local-deployment --run-config 'recipe="/abs/federate.yaml"' --stream``.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import TransfuseError
from .config import AggregateSpec, FederateConfig, MethodSpec
from .federation import Server, build_federation

APP_DIR = Path(__file__).parent / "flower_app"
CONNECTION = "transfuse-local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_binary(name: str) -> str:
    """A Flower console script next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise TransfuseError(f"{name} is not found next to {sys.executable} or on PATH; pip install 'transfuse[federated]'")
    return found


class LocalFederation:
    """A SuperLink and ``clients`` SuperNodes on localhost, each its own process group, logs under ``workdir/logs``."""

    def __init__(self, workdir: Path, clients: int, *, isolation: str = "subprocess") -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()  # flwr 1.42: the SuperLink's Fleet, Control and Runtime APIs share one HTTP port
        self.clients = clients
        self.isolation = isolation
        self.procs: Dict[str, subprocess.Popen] = {}
        home = workdir / "flwr-home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n')
        src = str(Path(__file__).resolve().parents[2])  # this transfuse, for the ServerApp / ClientApp processes
        self.env = {**os.environ, "FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1",
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),  # flower-superexec ...
                    "PYTHONPATH": os.pathsep.join([src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}

    def _start(self, name: str, argv: List[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.workdir),
                                start_new_session=True)  # its own process group: stopped with its children
        log.close()
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        self._start("superlink", [flower_binary("flower-superlink"), "--insecure", "--isolation", self.isolation,
                                  "--host", "127.0.0.1", "--port", str(self.port)])
        for k in range(self.clients):
            self._start(f"supernode-{k}", [flower_binary("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                                           "--isolation", self.isolation, "--port", str(free_port()),
                                           "--node-config", f"partition-id={k} num-partitions={self.clients}"])

    def check_alive(self) -> None:
        link = self.procs["superlink"]
        if link.poll() is not None:
            raise TransfuseError(f"the SuperLink exited ({link.returncode}); see {self.logs / 'superlink.log'}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()


def submit(fedn: LocalFederation, run_config: Dict[str, object], timeout: float) -> None:
    """``flwr run`` the shipped app with ``run_config`` (retried until the SuperLink answers); streams its log to a file."""
    import tomli_w

    app = fedn.workdir / "app"
    shutil.copytree(APP_DIR, app, dirs_exist_ok=True)
    overrides = fedn.workdir / "run_config.toml"
    overrides.write_bytes(tomli_w.dumps(run_config).encode())
    argv = [flower_binary("flwr"), "run", str(app), CONNECTION, "--run-config", str(overrides), "--stream"]
    deadline = time.time() + timeout
    while True:
        fedn.check_alive()
        with open(fedn.logs / "flwr-run.log", "ab") as log:
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=fedn.env, cwd=str(fedn.workdir))
        if proc.returncode == 0:  # --stream returns when the run has ended
            return
        if time.time() > deadline:
            raise TransfuseError(f"flwr run did not start the run within {timeout:.0f} s; see {fedn.logs / 'flwr-run.log'}")
        time.sleep(2)


def run_deployment(cfg: FederateConfig, seed: int, spec: MethodSpec, aggregation: AggregateSpec, *,
                   progress: Optional[Callable[[str], None]] = None, checkpoint: Optional[Path] = None) -> Server:
    """The same run as ``run_inprocess``, its clients and server in separate processes (SuperLink + SuperNodes)."""
    from .api import _label
    from .checkpoint import load_checkpoint
    from .flower import finished, require_flower

    require_flower()
    # the run config carries this one method (its aggregation explicit), so the apps find it by its label
    cfg = cfg.model_copy(update={"methods": [spec.model_copy(update={"aggregate": aggregation})]})
    if checkpoint is not None:  # the ServerApp derives the same folder from checkpoint_dir; make it absolute for it
        cfg = cfg.model_copy(update={"checkpoint_dir": str(Path(cfg.checkpoint_dir).resolve())})
    workdir = Path(tempfile.mkdtemp(prefix="transfuse-flwr-"))
    result = workdir / "result"
    fedn = LocalFederation(workdir, cfg.clients, isolation=cfg.federation.isolation)
    try:
        fedn.start()
        if progress is not None:
            progress(f"deployment: SuperLink and {cfg.clients} SuperNodes on localhost (logs {fedn.logs})")
        submit(fedn, {"config": cfg.model_dump_json(), "method": _label(spec, cfg), "seed": seed, "output": str(result)},
               cfg.federation.startup_timeout)
        until = time.time() + 30
        while not (result / "final" / "state.safetensors").exists() and time.time() < until:  # the stream may end first
            if "ServerApp raised an exception" in (fedn.logs / "flwr-run.log").read_text(errors="replace"):
                break
            time.sleep(0.5)
    finally:
        fedn.stop()
    server = Server(build_federation(cfg, seed), spec, aggregation)
    if not (result / "final" / "state.safetensors").exists():
        log = (fedn.logs / "flwr-run.log").read_text(errors="replace")
        said = [line.split(":", 1)[1].strip() for line in log.splitlines() if line.startswith("transfuse.errors.TransfuseError:")]
        raise TransfuseError(f"{said[-1] if said else 'the ServerApp wrote no result'} (the Flower run's log: {fedn.logs / 'flwr-run.log'})")
    load_checkpoint(server, result / "final")
    finished(server, cfg, progress, "deployment")
    shutil.rmtree(workdir, ignore_errors=True)
    return server


__all__ = ["LocalFederation", "run_deployment"]
