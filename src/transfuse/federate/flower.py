"""Flower underneath (flwr 1.42 Message API): a transfuse Strategy (a ``FedAvg`` subclass whose
aggregation is the recipe's: fedavg, a merge method on deltas, plus the method's server transfer),
and ClientApp / ServerApp factories usable by ``flwr.simulation.run_simulation`` and ``flwr run``.

Both apps are rebuilt from the config as JSON, so a Ray actor (another process) needs nothing else.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from ..errors import TransfuseError
from .aggregate import state_bytes
from .config import AggregateSpec, FederateConfig, MethodSpec
from .federation import Server, build_federation, client_update
from .methods import build_method

INSTALL = "Flower is not installed: pip install 'transfuse[federated]' (flwr[simulation]==1.42.0), or use engine=inprocess"


def require_flower() -> None:
    try:
        import flwr  # noqa: F401
        from flwr.serverapp.strategy import FedAvg  # noqa: F401
    except ImportError:
        raise TransfuseError(INSTALL) from None


def make_strategy(server: Server, **kwargs: Any):
    """A ``flwr.serverapp.strategy.FedAvg`` subclass instance whose ``aggregate_train`` is ``server.round``."""
    from flwr.app import ArrayRecord, MetricRecord
    from flwr.serverapp.strategy import FedAvg

    class TransfuseStrategy(FedAvg):
        """FedAvg's sampling and messaging; transfuse's aggregation, server transfer and evaluation."""

        def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> Tuple[Optional[Any], Optional[Any]]:
            replies = list(replies)  # an iterable: materialise once
            valid, failed = self._check_and_log_replies(replies, is_train=True)
            if not valid:
                return None, None
            results = []
            for msg in valid:
                m = msg.content["metrics"]
                sd = msg.content["arrays"].to_torch_state_dict()
                results.append((int(m["client-id"]), sd, int(m["num-examples"]),
                                {"train_loss": float(m["train_loss"]), "local_acc": float(m["local_acc"])}))
            g = server.state
            new = server.round(server_round, results, sent=len(replies) * state_bytes(g),
                               received=sum(state_bytes(r[1]) for r in results))
            server.history[-1]["dropped"] = [{"client": None, "error": str(msg.error)} for msg in failed]
            h = server.history[-1]
            return ArrayRecord(new), MetricRecord({"global_acc": h["global_acc"], "mean_local_acc": h["mean_local_acc"]})

    return TransfuseStrategy(**kwargs)


def client_app(cfg_json: str, seed: int, spec_json: str):
    """The ClientApp: client ``partition-id`` trains the received model on its shard."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg, context):
        cfg = FederateConfig.model_validate_json(cfg_json)
        fed = build_federation(cfg, seed)
        k = int(context.node_config["partition-id"])
        method = build_method(**{key: v for key, v in json.loads(spec_json).items() if key in ("name", "params")})
        sd = msg.content["arrays"].to_torch_state_dict()
        new, n, metrics = client_update(fed, k, sd, method, server_round=int(msg.content["config"]["server-round"]))
        reply = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": n, "client-id": k, **metrics})})
        return Message(reply, reply_to=msg)

    return app


def server_app(server: Server):
    """The ServerApp: ``cfg.rounds`` rounds of the transfuse strategy from the server's initial model."""
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp import ServerApp

    app = ServerApp()
    cfg = server.fed.cfg

    @app.main()
    def main(grid, context) -> None:
        per_round = min(cfg.clients_per_round or cfg.clients, cfg.clients)
        strategy = make_strategy(server, fraction_train=per_round / cfg.clients, fraction_evaluate=0.0,
                                 min_train_nodes=per_round, min_available_nodes=cfg.clients)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(server.state), num_rounds=cfg.rounds,
                       train_config=ConfigRecord({}))

    return app


def run_flower(cfg: FederateConfig, seed: int, spec: MethodSpec, aggregation: AggregateSpec, *,
               progress: Optional[Callable[[str], None]] = None) -> Server:
    """The same run as ``run_inprocess`` under ``flwr.simulation.run_simulation`` (Ray backend)."""
    require_flower()
    import os

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from flwr.simulation import run_simulation

    fed = build_federation(cfg, seed)
    server = Server(fed, spec, aggregation)
    num_cpus = int(cfg.flower.get("num_cpus", 1))
    run_simulation(server_app=server_app(server), client_app=client_app(cfg.model_dump_json(), seed, spec.model_dump_json()),
                   num_supernodes=cfg.clients, backend_name="ray",
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": num_cpus, "include_dashboard": False}})
    if len(server.history) != cfg.rounds:
        raise TransfuseError(f"the Flower simulation finished {len(server.history)} of {cfg.rounds} rounds; see the log above")
    if progress is not None:
        h = server.history[-1]
        progress(f"flower: {cfg.rounds} rounds, global acc {h['global_acc']:.3f}")
    return server


__all__ = ["INSTALL", "client_app", "make_strategy", "require_flower", "run_flower", "server_app"]
