"""What every participant needs, rebuilt from the plain config dict in any process (Flower's Ray
actors included): the data shards, the model factory, one client's local update, the server step.

The server step (``Server.round``) is the ONE aggregation both engines call: the in-process loop
(``inprocess.py``) and the Flower strategy (``flower.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..data import IndexedTensors, build_data
from .._atomic import write_text
from ..errors import TransfuseError
from .aggregate import StateDict, aggregate, clone_state
from .config import AggregateSpec, FederateConfig, MethodSpec
from .methods import FederatedMethod, build_method
from .splits import client_domains, split_clients


@dataclass
class Federation:
    """The data as the clients and the server hold it, and the model factory (one config, one seed)."""

    cfg: FederateConfig
    seed: int
    clients: List[IndexedTensors]  # each client's training shard
    client_val: List[IndexedTensors]  # each client's held-out slice (local accuracy)
    test: IndexedTensors  # the global test set
    target: Optional[IndexedTensors]  # the shifted target domain's test set (fedka), or None
    transfer: Optional[Tensor]  # (S, ...) unlabelled server inputs, or None
    target_inputs: Optional[Tensor] = None  # (S, ...) the transfer inputs shifted into the target domain
    in_shape: Tuple[int, ...] = ()
    num_classes: int = 0
    domains: List[float] = field(default_factory=list)

    def new_model(self, arch: int = 0) -> nn.Module:
        """A fresh model of architecture ``arch`` (an index into ``cfg.model_specs()``), seeded."""
        from ..models import build_model

        spec = self.cfg.model_specs()[arch]
        torch.manual_seed(self.seed + 1_000_033 * arch)  # the same initial global model(s) for every method
        return build_model(spec.name, spec.params, in_shape=self.in_shape, num_classes=self.num_classes)

    @property
    def architectures(self) -> int:
        return len(self.cfg.model_specs())

    def arch_of(self, client: int) -> int:
        """The architecture client ``client`` trains: the recipe's models dealt round-robin."""
        return client % self.architectures


_CACHE: Dict[str, Federation] = {}


def build_federation(cfg: FederateConfig, seed: int) -> Federation:
    """The federation of ``cfg`` under ``seed`` (cached per process: Flower calls a client many times)."""
    key = f"{cfg.model_dump_json()}|{seed}"
    if key in _CACHE:
        return _CACHE[key]
    from ..data.shifted import rotate_images

    data = build_data(cfg.data.name, cfg.data.params)
    if data.test is None:
        raise TransfuseError(f"data set {cfg.data.name!r} has no test split; federate evaluates on it")
    train = data.train
    if (train.labels < 0).any():
        train = train.subset((train.labels >= 0).nonzero().flatten())
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=gen)
    if cfg.server_data >= len(train):
        raise TransfuseError(f"server_data={cfg.server_data} leaves no training samples for the clients (there are {len(train)})")
    transfer = train.inputs[order[: cfg.server_data]] if cfg.server_data else None  # (S, ...) labels dropped
    rest = train.subset(order[cfg.server_data :].sort().values)
    parts = split_clients(rest.labels, cfg.clients, kind=cfg.split.kind, alpha=cfg.split.alpha, shards=cfg.split.shards, generator=gen)
    fill = float(train.inputs.min())
    domains = client_domains(cfg.clients, cfg.split.domains) if cfg.split.kind == "domain" else [0.0] * cfg.clients
    shards, vals = [], []
    for k, pos in enumerate(parts):
        shard = rest.subset(pos[torch.randperm(len(pos), generator=gen)])
        if domains[k]:
            shard = IndexedTensors(rotate_images(shard.inputs, domains[k], fill), shard.labels, shard.index)
        n_val = max(int(len(shard) * cfg.local.val_fraction), 1 if cfg.local.val_fraction and len(shard) >= 4 else 0)
        vals.append(shard.subset(torch.arange(n_val)))
        shards.append(shard.subset(torch.arange(n_val, len(shard))))
    target = None
    if cfg.target_rotate is not None:
        target = IndexedTensors(rotate_images(data.test.inputs, cfg.target_rotate, fill), data.test.labels, data.test.index)
    target_inputs = rotate_images(transfer, cfg.target_rotate, fill) if transfer is not None and cfg.target_rotate is not None else None
    fed = Federation(cfg, seed, shards, vals, data.test, target, transfer, target_inputs, tuple(data.in_shape), data.num_classes, domains)
    _CACHE.clear()
    _CACHE[key] = fed
    return fed


@torch.no_grad()
def accuracy(model: nn.Module, data: IndexedTensors, batch_size: int = 1000) -> float:
    if not len(data):
        return float("nan")
    was = model.training
    model.eval()
    correct = sum(int((model(data.inputs[i : i + batch_size]).argmax(-1) == data.labels[i : i + batch_size]).sum())
                  for i in range(0, len(data), batch_size))
    model.train(was)
    return correct / len(data)


def load_state(model: nn.Module, sd: StateDict) -> nn.Module:
    model.load_state_dict(sd)
    return model


def client_update(fed: Federation, k: int, global_sd: StateDict, method: FederatedMethod, *, server_round: int) -> Tuple[StateDict, int, Dict[str, float]]:
    """Client ``k`` trains the global model on its shard: (its state dict, its sample count, metrics)."""
    cfg = fed.cfg.local
    injected_fault(server_round, k)
    method.bind(transfer=fed.transfer, target=fed.target_inputs)
    model = load_state(fed.new_model(fed.arch_of(k)), global_sd)
    global_params = [p.detach().clone() for p in model.parameters()]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum) if cfg.optimizer == "sgd"
           else torch.optim.Adam(params, lr=cfg.lr))
    gen = torch.Generator().manual_seed(fed.seed * 1_000_003 + server_round * 1009 + k)
    data = fed.clients[k]
    model.train()
    total, steps = 0.0, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), cfg.batch_size):
            batch = data.__getitems__(order[start : start + cfg.batch_size].tolist())
            loss = method.client_loss(model, batch, global_params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
    method.after_local(model, k, fed.transfer, gen)
    metrics = {"train_loss": total / max(steps, 1), "local_acc": accuracy(model, fed.client_val[k])}
    return clone_state(model.state_dict()), len(data), metrics


FAULTS_ENV = "TRANSFUSE_FEDERATE_FAULTS"


def injected_fault(server_round: int, client: int) -> None:
    """Fault injection for tests and drills, from the environment (every engine's clients read it):
    ``TRANSFUSE_FEDERATE_FAULTS='{"hang": {"ROUND:CLIENT": SECONDS}, "crash": ["ROUND:CLIENT"], "trace": DIR}'``.
    ``trace``: each client writes ``DIR/started-rROUND-cCLIENT`` (its pid and parent pid) when it starts a round,
    the server ``DIR/saved-rROUND`` when it has checkpointed a round."""
    import json
    import os
    import time

    raw = os.environ.get(FAULTS_ENV)
    if not raw:
        return
    faults = json.loads(raw)
    at = f"{server_round}:{client}"
    trace(f"started-r{server_round}-c{client}")
    if at in faults.get("crash", []):
        raise RuntimeError(f"client {client} crashed in round {server_round} (injected)")
    if at in faults.get("hang", {}):
        time.sleep(float(faults["hang"][at]))


def check_architectures(name: str, method: FederatedMethod, architectures: int) -> None:
    """Weights average only between equal architectures: several need a method whose knowledge goes through logits."""
    if architectures > 1 and not method.across_architectures:
        raise TransfuseError(
            f"method {name!r} aggregates client weights, which cannot be averaged across {architectures} different "
            "client architectures; list one model, or use a method whose knowledge goes through logits (feddf, knfu)")


def trace(name: str) -> None:
    """With ``"trace": DIR`` in TRANSFUSE_FEDERATE_FAULTS: write ``DIR/name`` holding this process's pid and parent pid."""
    import json
    import os

    raw = os.environ.get(FAULTS_ENV)
    folder = json.loads(raw).get("trace") if raw else None
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    write_text(path, f"{os.getpid()} {os.getppid()}")


class Server:
    """The server side of one method: aggregation (fedavg or a merge method on deltas), then the
    method's server transfer, then the evaluation; keeps the per-round history.

    With several client architectures the server keeps one global model per architecture; each is
    aggregated from its own clients only (weights can be averaged only between equal
    architectures) and knowledge crosses architectures through logits (FedDF distils every client's
    ensemble into each global model, KnFu fuses predictions), as FedDF's heterogeneous setting does."""

    def __init__(self, fed: Federation, spec: MethodSpec, aggregation: AggregateSpec) -> None:
        self.fed = fed
        self.spec = spec
        self.method = build_method(spec.name, spec.params)
        check_architectures(spec.name, self.method, fed.architectures)
        self.method.bind(transfer=fed.transfer, target=fed.target_inputs)
        self.aggregation = aggregation
        self.models = [fed.new_model(a) for a in range(fed.architectures)]
        self.model = self.models[0]  # the global model that is evaluated as "global_acc"
        self.history: List[Dict[str, Any]] = []
        self.generator = torch.Generator().manual_seed(fed.seed + 7)

    @property
    def state(self) -> StateDict:
        """Architecture 0's global state dict."""
        return clone_state(self.model.state_dict())

    @property
    def states(self) -> List[StateDict]:
        """Every architecture's global state dict."""
        return [clone_state(m.state_dict()) for m in self.models]

    def method_state(self) -> Dict[str, Tensor]:
        """Tensors the method keeps between rounds (KnFu's per-client targets), for checkpoints."""
        return self.method.server_state()

    def load_method_state(self, tensors: Dict[str, Tensor]) -> None:
        self.method.load_server_state(tensors)

    def sample_clients(self, server_round: int) -> List[int]:
        """The clients of a round: all, or ``clients_per_round`` of them drawn by the seed."""
        n = self.fed.cfg.clients_per_round or self.fed.cfg.clients
        if n >= self.fed.cfg.clients:
            return list(range(self.fed.cfg.clients))
        gen = torch.Generator().manual_seed(self.fed.seed * 7919 + server_round)
        return sorted(torch.randperm(self.fed.cfg.clients, generator=gen)[:n].tolist())

    def round(self, server_round: int, results: Sequence[Tuple[int, StateDict, int, Dict[str, float]]],
              *, sent: int = 0, received: int = 0) -> StateDict:
        """Aggregate the round's (client id, state dict, sample count, metrics) and transfer; returns the new global state."""
        results = sorted(results, key=lambda r: r[0])  # one order whatever order the replies came in
        sds = [r[1] for r in results]
        for a, model in enumerate(self.models):  # each architecture from its own clients
            group = [r for r in results if self.fed.arch_of(r[0]) == a]
            if group:
                new = aggregate(clone_state(model.state_dict()), [r[1] for r in group], [r[2] for r in group], name=self.aggregation.name,
                                params=self.aggregation.params, seed=self.fed.seed + server_round + 7919 * a)
                load_state(model, new)
        extra: Dict[str, float] = {}
        if type(self.method).server_transfer is not FederatedMethod.server_transfer and sds:
            clients = [load_state(self.fed.new_model(self.fed.arch_of(r[0])), r[1]) for r in results]
            outs = [self.method.server_transfer(model, clients, self.fed.transfer, self.generator, [r[0] for r in results])
                    for model in (self.models if self.method.transfers_into_global else self.models[:1])]
            extra = {k: sum(o[k] for o in outs) / len(outs) for k in outs[0]}  # one architecture: its own numbers
        record: Dict[str, Any] = {
            "round": server_round,
            "global_acc": accuracy(self.model, self.fed.test),
            "mean_local_acc": _nanmean([r[3]["local_acc"] for r in results]),  # clients without a held-out slice left out
            "clients": {str(r[0]): {"n": r[2], **r[3]} for r in results},
            "bytes_down": sent + int(extra.pop("bytes_down_extra", 0)),  # + what the method sends besides weights
            "bytes_up": received + int(extra.pop("bytes_up_extra", 0)),
            **extra,
        }
        if len(self.models) > 1:
            record["global_acc_by_model"] = [accuracy(m, self.fed.test) for m in self.models]
        if self.fed.target is not None:
            record["target_acc"] = accuracy(self.model, self.fed.target)
        self.history.append(record)
        return self.state


def _nanmean(values: List[float]) -> float:
    kept = [v for v in values if v == v]
    return float(sum(kept) / len(kept)) if kept else float("nan")


def method_label(spec: MethodSpec, aggregation: AggregateSpec) -> str:
    if spec.label:
        return spec.label
    return spec.name if aggregation.name == "fedavg" else f"{spec.name}+{aggregation.name}"


