"""Federated methods: one file per method, registered as ``@methods.register("name")``.

A method is a small class with keyword-only, typed, defaulted hyperparameters and hooks around
one shared round (client local training -> aggregation -> optional server transfer):

- ``bind(transfer, target)``: the unlabelled inputs it may use (FedKA's target domain);
- ``client_loss(model, batch, global_params)``: the local objective (CE by default; FedProx adds
  its proximal term);
- ``after_local(model, client, transfer, generator)``: on the client, after its local epochs (KnFu
  fine-tunes on the fused soft labels the server computed for it);
- ``server_transfer(model, client_models, transfer, generator, client_ids)``: after aggregation, on
  the server (FedDF distils the clients' ensemble into the global model on the unlabelled
  ``transfer`` inputs; KnFu fuses each client's neighbours' predictions).

State between rounds: ``server_state`` / ``load_server_state`` (what a checkpoint keeps, e.g. KnFu's
per-client targets) and ``client_state(client)`` / ``load_client_state(client, tensors)`` (what the
server sends one client with its round's model, so clients in other processes get it under Flower).

``across_architectures``: knowledge crosses client architectures through logits (FedDF, KnFu), so a
recipe may list several client models; ``transfers_into_global``: ``server_transfer`` trains the
global model (FedDF, FedKA), so with several architectures it runs once per global model.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...registry import Registry

methods: Registry = Registry("federated-method", "transfuse.federate.methods")


class FederatedMethod:
    """Base of the registered methods: FedAvg's behaviour (plain CE locally, nothing on the server)."""

    def client_loss(self, model: nn.Module, batch: Dict[str, Tensor], global_params: List[Tensor]) -> Tensor:
        logits = model(batch["inputs"])  # (B, C)
        return F.cross_entropy(logits.float(), batch["labels"])

    across_architectures: bool = False
    transfers_into_global: bool = True

    def server_state(self) -> Dict[str, Tensor]:
        """Tensors kept between rounds on the server (saved in checkpoints)."""
        return {}

    def load_server_state(self, tensors: Dict[str, Tensor]) -> None:
        pass

    def client_state(self, client: int) -> Dict[str, Tensor]:
        """Tensors the server sends client ``client`` with its round's model."""
        return {}

    def load_client_state(self, client: int, tensors: Dict[str, Tensor]) -> None:
        """On the client: what ``client_state`` sent it (before its local update)."""

    def bind(self, *, transfer: Optional[Tensor], target: Optional[Tensor]) -> None:
        """The unlabelled inputs a method may use: the server's ``transfer`` set (S, ...) and the
        same samples shifted into the target domain (``target``), each None when the recipe has none."""

    def after_local(self, model: nn.Module, client: int, transfer: Optional[Tensor], generator: torch.Generator) -> None:
        pass

    def server_transfer(self, model: nn.Module, client_models: List[nn.Module], transfer: Optional[Tensor],
                        generator: torch.Generator, client_ids: List[int]) -> Dict[str, float]:
        return {}


def build_method(name: str, params: Optional[dict] = None) -> FederatedMethod:
    from ...registry import build

    return build(methods, name, params)


__all__ = ["FederatedMethod", "build_method", "methods"]
