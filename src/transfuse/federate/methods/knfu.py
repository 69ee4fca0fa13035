"""KnFu (knowledge fusion among semantic neighbours in federated learning), as METHODS.md section F summarises it.

Followed: every client shares its soft predictions on a common unlabelled transfer set; the server
measures knowledge similarity between clients (negative mean KL divergence of their predictions),
keeps each client's ``neighbours`` most similar others, weights them by softmax(beta * similarity)
(beta 10) and fuses their predictions (fusion rule ``mean`` by default) into that client's target;
in the next round the client, after its local epochs, fine-tunes on its fused soft labels. The
global model is still aggregated (FedAvg by default); KnFu's metric is the mean local accuracy.
No public code was found; the paper's exact similarity measure was not re-read (mean KL assumed).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from ...errors import TransfuseError
from . import FederatedMethod, methods


@methods.register("knfu")
class KnFu(FederatedMethod):
    """KnFu: per-client targets fused from knowledge-similar neighbours' predictions; clients fine-tune on them."""

    across_architectures = True  # only predictions cross clients
    transfers_into_global = False

    def __init__(self, *, beta: float = 10.0, neighbours: int = 0, rule: str = "mean", rule_params: Optional[Dict[str, Any]] = None,
                 steps: int = 20, batch_size: int = 64, lr: float = 0.01, include_self: bool = False) -> None:
        from ...fusion.rules import build_rule

        if beta < 0 or neighbours < 0 or steps < 0 or batch_size < 1 or lr <= 0:
            raise TransfuseError("knfu needs beta >= 0, neighbours >= 0 (0: all), steps >= 0, batch_size >= 1, lr > 0")
        self.beta, self.neighbours, self.steps, self.batch_size, self.lr = beta, neighbours, steps, batch_size, lr
        self.include_self = include_self
        self.rule = build_rule(rule, rule_params)
        self.targets: Dict[int, Tensor] = {}  # client id -> (S, C) fused log-probs on the transfer set

    def server_state(self) -> Dict[str, Tensor]:
        return {f"targets.{k}": v for k, v in self.targets.items()}

    def load_server_state(self, tensors: Dict[str, Tensor]) -> None:
        self.targets = {int(k.split(".", 1)[1]): v for k, v in tensors.items() if k.startswith("targets.")}

    def client_state(self, client: int) -> Dict[str, Tensor]:
        return {"target": self.targets[client]} if client in self.targets else {}

    def load_client_state(self, client: int, tensors: Dict[str, Tensor]) -> None:
        self.targets = {client: tensors["target"]} if "target" in tensors else {}

    def after_local(self, model: nn.Module, client: int, transfer: Optional[Tensor], generator: torch.Generator) -> None:
        target = self.targets.get(client)
        if target is None or transfer is None or not self.steps:
            return
        opt = torch.optim.SGD(model.parameters(), lr=self.lr)
        model.train()
        for _ in range(self.steps):
            pick = torch.randint(len(transfer), (min(self.batch_size, len(transfer)),), generator=generator)
            logp = model(transfer[pick]).float().log_softmax(-1)  # (B, C)
            t = target[pick]  # (B, C) log-probs
            loss = (t.exp() * (t - logp)).sum(-1).mean()  # KL(target || model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    @torch.no_grad()
    def server_transfer(self, model: nn.Module, client_models: List[nn.Module], transfer: Optional[Tensor],
                        generator: torch.Generator, client_ids: List[int]) -> Dict[str, float]:
        if transfer is None or not len(transfer):
            raise TransfuseError("knfu needs server data: set server_data to the number of unlabelled training samples shared as the transfer set")
        for m in client_models:
            m.eval()
        logp = torch.stack([m(transfer).float().log_softmax(-1) for m in client_models])  # (K, S, C)
        p = logp.exp()
        # kl[i, j] = mean_s KL(p_i || p_j)
        kl = (p.unsqueeze(1) * (logp.unsqueeze(1) - logp.unsqueeze(0))).sum(-1).mean(-1)  # (K, K)
        K = len(client_models)
        self.targets = {}
        for i, cid in enumerate(client_ids):
            sim = -kl[i].clone()  # (K,)
            if not self.include_self and K > 1:
                sim[i] = float("-inf")
            if self.neighbours and self.neighbours < K:
                keep = sim.topk(self.neighbours).indices
                mask = torch.full_like(sim, float("-inf"))
                mask[keep] = 0.0
                sim = sim + mask
            w = torch.softmax(self.beta * sim, 0)  # (K,)
            use = w > 0
            self.targets[cid] = self.rule(logp[use], w[use] / w[use].sum())  # (S, C)
        shared = logp[0].numel() * 4  # one client's (S, C) float32 predictions: up to the server, its target back
        return {"knfu_mean_kl": float(kl.sum() / max(K * (K - 1), 1)), "bytes_up_extra": K * shared, "bytes_down_extra": K * shared}
