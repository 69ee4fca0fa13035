"""FedDF (Lin et al. NeurIPS 2020, "Ensemble distillation for robust model fusion in federated learning").

Followed: after the clients' models are aggregated, the server distils the clients' ensemble
(FedDF averages their logits: fusion rule ``logit_mean``; any registered rule works) into the
aggregated model on unlabelled server data, with Adam for a fixed number of steps (the paper uses
up to 500 with early stopping on a validation set; here ``steps`` is fixed and no labels are used).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from ...errors import TransfuseError
from . import FederatedMethod, methods


@methods.register("feddf")
class FedDF(FederatedMethod):
    """FedDF (Lin et al. 2020): clients as in FedAvg; the server distils the clients' fused ensemble on unlabelled data."""

    across_architectures = True  # the ensemble is of logits: FedDF's heterogeneous-architecture setting

    def __init__(self, *, rule: str = "logit_mean", rule_params: Optional[Dict[str, Any]] = None, objective: str = "kd",
                 objective_params: Optional[Dict[str, Any]] = None, steps: int = 100, batch_size: int = 64,
                 lr: float = 1e-3) -> None:
        from ...fusion.rules import build_rule
        from ...objectives import build_objective

        if steps < 0 or batch_size < 1 or lr <= 0:
            raise TransfuseError(f"feddf needs steps >= 0, batch_size >= 1 and lr > 0; got {steps}, {batch_size}, {lr}")
        self.rule = build_rule(rule, rule_params)
        self.objective = build_objective(objective, {"temperature": 1.0, "alpha": 1.0, **(objective_params or {})}
                                         if objective == "kd" else objective_params)
        self.steps, self.batch_size, self.lr = steps, batch_size, lr

    def server_transfer(self, model: nn.Module, client_models: List[nn.Module], transfer: Optional[Tensor],
                        generator: torch.Generator, client_ids: List[int]) -> Dict[str, float]:
        from ...signals import Batch, Outputs

        if transfer is None or not len(transfer):
            raise TransfuseError("feddf needs server data: set server_data to the number of unlabelled training samples the server keeps")
        for m in client_models:
            m.eval()
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        weights = torch.full((len(client_models),), 1.0 / len(client_models))  # (K,)
        model.train()
        total = 0.0
        for _ in range(self.steps):
            pick = torch.randint(len(transfer), (min(self.batch_size, len(transfer)),), generator=generator)
            x = transfer[pick]  # (B, ...)
            with torch.no_grad():
                logprobs = torch.stack([m(x).float().log_softmax(-1) for m in client_models])  # (K, B, C)
                target = self.rule(logprobs, weights)  # (B, C) log-probs
            labels = torch.full((len(x),), -1, dtype=torch.long)  # unlabelled: only the distillation term
            loss = self.objective(Outputs(logits=model(x)), Outputs(logits=target), Batch(inputs=x, labels=labels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        return {"distill_loss": total / max(self.steps, 1)}
