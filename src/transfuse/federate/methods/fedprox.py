"""FedProx (Li et al. 2020, "Federated optimization in heterogeneous networks"), as Flower's FedProx."""
from __future__ import annotations

from typing import Dict, List

from torch import Tensor, nn

from ...errors import TransfuseError
from . import FederatedMethod, methods


@methods.register("fedprox")
class FedProx(FederatedMethod):
    """FedProx (Li et al. 2020): client CE + mu/2 ||w - w_global||^2 (Flower passes ``proximal-mu`` the same way)."""

    def __init__(self, *, mu: float = 0.01) -> None:
        if mu < 0:
            raise TransfuseError(f"fedprox mu must be >= 0; got {mu}")
        self.mu = mu

    def client_loss(self, model: nn.Module, batch: Dict[str, Tensor], global_params: List[Tensor]) -> Tensor:
        loss = super().client_loss(model, batch, global_params)
        prox = sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params))
        return loss + 0.5 * self.mu * prox
