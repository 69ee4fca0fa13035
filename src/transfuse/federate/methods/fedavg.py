"""FedAvg (McMahan et al. 2017, "Communication-efficient learning of deep networks from decentralized data")."""
from __future__ import annotations

from . import FederatedMethod, methods


@methods.register("fedavg")
class FedAvg(FederatedMethod):
    """FedAvg (McMahan et al. 2017): local SGD on CE, then the recipe's aggregation (weighted mean by default)."""

    def __init__(self) -> None:
        pass
