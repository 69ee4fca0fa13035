"""Flower underneath (flwr 1.42 Message API): a transfuse Strategy (a ``FedAvg`` subclass whose
aggregation is the recipe's: fedavg, a merge method on deltas, plus the method's server transfer),
and ClientApp / ServerApp factories used by ``flwr.simulation.run_simulation`` (engine=flower) and
by ``flwr run`` on a SuperLink with SuperNodes (engine=deployment, see ``app.py``, ``deployment.py``).

Per client, the strategy sends its architecture's global model and the method's state for that
client (KnFu's fused targets): Flower's FedAvg sends one payload to all, so ``configure_train`` builds
one message per node; which client a node hosts is learnt from its first reply (until then a node
gets every architecture's model). Each round is checkpointed after aggregation when asked.
Both apps are rebuilt from the config as JSON, so a Ray actor or a SuperNode needs nothing else.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ..errors import TransfuseError
from .aggregate import state_bytes
from .config import AggregateSpec, FederateConfig, MethodSpec
from .federation import Server, build_federation, client_update
from .methods import build_method

INSTALL = "Flower is not installed: pip install 'transfuse[federated]' (flwr[simulation]==1.42.0), or use engine=inprocess"
NO_REPLY = "no reply within federation.client_timeout (the client hung, was killed or its node is gone)"


def require_flower() -> None:
    try:
        import flwr  # noqa: F401
        from flwr.serverapp.strategy import FedAvg  # noqa: F401
    except ImportError:
        raise TransfuseError(INSTALL) from None


def make_strategy(server: Server, *, checkpoint: Optional[Path] = None, round_offset: int = 0, **kwargs: Any):
    """A ``flwr.serverapp.strategy.FedAvg`` subclass instance whose ``aggregate_train`` is ``server.round``.

    ``round_offset``: rounds already done (a resumed run); Flower counts its rounds from 1 again."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from .checkpoint import save_checkpoint

    fed = server.fed

    class TransfuseStrategy(FedAvg):
        """FedAvg's sampling and messaging; transfuse's per-client payloads, aggregation, server transfer and evaluation."""

        node_clients: Dict[int, int] = {}  # node id -> client (partition) id, learnt from replies
        sent: Dict[int, int] = {}  # node id -> bytes of weights sent this round

        def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
            if server_round > 1:  # round 1 waits for every client; later rounds go on with the nodes still online
                self.min_train_nodes = self.min_available_nodes = 1
            messages = list(super().configure_train(server_round + round_offset, arrays, config, grid))
            states = server.states  # one per architecture
            out, self.sent = [], {}
            for msg in messages:
                node = msg.metadata.dst_node_id
                k = self.node_clients.get(node)
                content = RecordDict({"config": msg.content["config"]})
                if k is None:  # not known yet (round 1, a resumed run): every architecture's model and every client's state
                    content["arrays"] = ArrayRecord(states[0])
                    for a in range(1, len(states)):
                        content[f"arrays-{a}"] = ArrayRecord(states[a])
                    self.sent[node] = sum(state_bytes(s) for s in states)
                    extra = {f"{c}/{name}": t for c in range(fed.cfg.clients) for name, t in server.method.client_state(c).items()}
                else:
                    content["arrays"] = ArrayRecord(states[fed.arch_of(k)])
                    self.sent[node] = state_bytes(states[fed.arch_of(k)])
                    extra = {f"{k}/{name}": t for name, t in server.method.client_state(k).items()}
                if extra:  # keyed "CLIENT/NAME": the client keeps its own
                    content["method-state"] = ArrayRecord(extra)
                out.append(Message(content=content, message_type=msg.metadata.message_type, dst_node_id=node))
            return out

        def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> Tuple[Optional[Any], Optional[Any]]:
            replies = list(replies)  # an iterable: materialise once
            valid, failed = self._check_and_log_replies(replies, is_train=True, validate=fed.architectures == 1)
            r = server_round + round_offset
            results = []
            for msg in valid:
                m = msg.content["metrics"]
                self.node_clients[msg.metadata.src_node_id] = int(m["client-id"])
                results.append((int(m["client-id"]), msg.content["arrays"].to_torch_state_dict(), int(m["num-examples"]),
                                {"train_loss": float(m["train_loss"]), "local_acc": float(m["local_acc"])}))
            answered = {msg.metadata.src_node_id for msg in replies}
            dropped = [{"client": self.node_clients.get(msg.metadata.src_node_id), "error": str(msg.error)} for msg in failed]
            dropped += [{"client": self.node_clients.get(node), "error": NO_REPLY} for node in self.sent if node not in answered]
            if not results:
                raise TransfuseError(f"round {r}: every client failed ({dropped[0]['error'] if dropped else 'no replies'}); nothing to aggregate")
            server.round(r, results, sent=sum(self.sent.values()), received=sum(state_bytes(x[1]) for x in results))
            h = server.history[-1]
            h["dropped"] = dropped
            if checkpoint is not None:
                save_checkpoint(server, checkpoint)
            return ArrayRecord(server.state), MetricRecord({"global_acc": h["global_acc"], "mean_local_acc": h["mean_local_acc"]})

    return TransfuseStrategy(**kwargs)


def train_reply(msg: Any, context: Any, cfg_json: str, seed: int, spec_json: str) -> Any:
    """One client's round: client ``partition-id`` trains the model it received on its shard; the reply message."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    cfg = FederateConfig.model_validate_json(cfg_json)
    fed = build_federation(cfg, seed)
    k = int(context.node_config["partition-id"])
    method = build_method(**{key: v for key, v in json.loads(spec_json).items() if key in ("name", "params")})
    a = fed.arch_of(k)
    sd = msg.content[f"arrays-{a}" if f"arrays-{a}" in msg.content else "arrays"].to_torch_state_dict()
    if "method-state" in msg.content:
        mine = {name.split("/", 1)[1]: t for name, t in msg.content["method-state"].to_torch_state_dict().items()
                if name.split("/", 1)[0] == str(k)}
        method.load_client_state(k, mine)
    new, n, metrics = client_update(fed, k, sd, method, server_round=int(msg.content["config"]["server-round"]))
    reply = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": n, "client-id": k, **metrics})})
    return Message(reply, reply_to=msg)


def client_app(cfg_json: str, seed: int, spec_json: str):
    """The ClientApp of one run (config, seed and method fixed)."""
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg, context):
        return train_reply(msg, context, cfg_json, seed, spec_json)

    return app


def run_strategy(server: Server, grid: Any, *, start: int, checkpoint: Optional[Path]) -> None:
    """The remaining rounds ``start..cfg.rounds`` of the transfuse strategy on ``grid``."""
    from flwr.app import ArrayRecord, ConfigRecord

    cfg = server.fed.cfg
    if start > cfg.rounds:
        return
    per_round = min(cfg.clients_per_round or cfg.clients, cfg.clients)
    strategy = make_strategy(server, checkpoint=checkpoint, round_offset=start - 1, fraction_train=per_round / cfg.clients,
                             fraction_evaluate=0.0, min_train_nodes=per_round, min_available_nodes=cfg.clients)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(server.state), num_rounds=cfg.rounds - start + 1,
                   timeout=cfg.federation.client_timeout or 3600.0, train_config=ConfigRecord({}))


def server_app(server: Server, *, start: int = 1, checkpoint: Optional[Path] = None):
    """The ServerApp of one run: rounds ``start..cfg.rounds`` from the server's (possibly resumed) model."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        run_strategy(server, grid, start=start, checkpoint=checkpoint)

    return app


def run_flower(cfg: FederateConfig, seed: int, spec: MethodSpec, aggregation: AggregateSpec, *,
               progress: Optional[Callable[[str], None]] = None, checkpoint: Optional[Path] = None) -> Server:
    """The same run as ``run_inprocess`` under ``flwr.simulation.run_simulation`` (Ray backend);
    ``checkpoint``: saved after every round, and a rerun resumes after its last round."""
    require_flower()
    import os

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    from .checkpoint import load_checkpoint

    fed = build_federation(cfg, seed)
    server = Server(fed, spec, aggregation)
    start = load_checkpoint(server, checkpoint) if checkpoint is not None else 1
    if start <= cfg.rounds:
        num_cpus = int(cfg.flower.get("num_cpus", 1))
        run_simulation(server_app=server_app(server, start=start, checkpoint=checkpoint),
                       client_app=client_app(cfg.model_dump_json(), seed, spec.model_dump_json()),
                       num_supernodes=cfg.clients, backend_name="ray",
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": num_cpus, "include_dashboard": False}})
    finished(server, cfg, progress, "flower")
    return server


def finished(server: Server, cfg: FederateConfig, progress: Optional[Callable[[str], None]], engine: str) -> None:
    """Raise when the run stopped short of ``cfg.rounds``; else report its last round."""
    if len(server.history) != cfg.rounds:
        raise TransfuseError(f"the Flower run finished {len(server.history)} of {cfg.rounds} rounds; see the log above")
    if progress is not None:
        h = server.history[-1]
        progress(f"{engine}: {cfg.rounds} rounds, global acc {h['global_acc']:.3f}")


__all__: List[str] = ["INSTALL", "client_app", "make_strategy", "require_flower", "run_flower", "run_strategy", "server_app",
                      "train_reply"]
