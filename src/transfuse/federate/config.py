"""The federate recipe's schema: data, split, clients, rounds, local training, model, methods, engine."""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field

from ..config import Strict


class DataSpec(Strict):
    name: str = "fashion_mnist"
    params: Dict[str, Any] = Field(default_factory=lambda: {"train_size": 6000, "test_size": 1000})


class SplitSpec(Strict):
    kind: Literal["iid", "dirichlet", "shards", "domain"] = "dirichlet"
    alpha: float = Field(1.0, gt=0)  # dirichlet concentration
    shards: int = Field(2, ge=1)  # label shards per client
    domains: List[float] = Field(default_factory=lambda: [0.0, 30.0, 60.0])  # rotations (degrees), kind=domain


class LocalSpec(Strict):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.0, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)  # each client's held-out slice: its local accuracy


class ModelSpec(Strict):
    name: str = "mlp"
    params: Dict[str, Any] = Field(default_factory=lambda: {"hidden": [128]})


class AggregateSpec(Strict):
    name: str = "fedavg"  # or any registered merge method on the client deltas: ties, dare, task_arithmetic, pcb...
    params: Dict[str, Any] = Field(default_factory=dict)


class MethodSpec(Strict):
    name: str = "fedavg"
    params: Dict[str, Any] = Field(default_factory=dict)
    aggregate: Optional[AggregateSpec] = None  # this method's aggregation (default: the recipe's)
    label: Optional[str] = None  # its name in the report (default: name, or name+aggregation)


class FederationSpec(Strict):
    """How the real-process engine (engine=deployment: a SuperLink and SuperNodes on localhost) runs, and its faults."""

    client_timeout: Optional[float] = Field(None, gt=0)  # seconds the server waits for a round's replies; late or dead clients are dropped
    isolation: Literal["subprocess", "process"] = "subprocess"  # Flower's: each SuperNode runs its ClientApp in a child process
    startup_timeout: float = Field(120.0, gt=0)  # seconds for the SuperLink and the SuperNodes to come up


class FederateConfig(Strict):
    data: DataSpec = Field(default_factory=DataSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    clients: int = Field(10, ge=1)
    clients_per_round: Optional[int] = Field(None, ge=1)  # default: all
    rounds: int = Field(5, ge=1)
    local: LocalSpec = Field(default_factory=LocalSpec)
    model: Union[ModelSpec, List[ModelSpec]] = Field(default_factory=ModelSpec)  # a list: several client architectures, dealt round-robin
    aggregate: AggregateSpec = Field(default_factory=AggregateSpec)
    methods: List[Union[str, MethodSpec]] = Field(default_factory=lambda: ["fedavg"])
    server_data: int = Field(0, ge=0)  # unlabelled training samples the server keeps (feddf, knfu)
    target_rotate: Optional[float] = None  # a shifted target domain: the test set rotated (fedka adapts to it)
    engine: Literal["inprocess", "flower", "deployment"] = "inprocess"  # deployment: real processes (SuperLink + SuperNodes)
    federation: FederationSpec = Field(default_factory=FederationSpec)
    flower: Dict[str, Any] = Field(default_factory=lambda: {"num_cpus": 1})  # run_simulation's ray resources
    seeds: List[int] = Field(default_factory=lambda: [0])
    checkpoint_dir: Optional[str] = None  # the server's state after each round, per method and seed; a rerun resumes from it
    output: str = "runs/federate"
    overwrite: bool = False

    def model_specs(self) -> List[ModelSpec]:
        """The client architectures; client k trains ``model_specs()[k % len]``, the server keeps one global model per entry."""
        return list(self.model) if isinstance(self.model, list) else [self.model]

    def method_specs(self) -> List[MethodSpec]:
        return [MethodSpec(name=m) if isinstance(m, str) else m for m in self.methods]
