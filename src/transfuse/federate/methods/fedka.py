"""FedKA (Sun et al. 2022, "Feature alignment and knowledge distillation ... federated knowledge alignment"), as METHODS.md section F summarises it.

Followed (code yuweisunn/federated-knowledge-alignment, not re-read here): each client minimises CE
on its data + ``mmd`` x multi-kernel MMD between its features on its data and the global model's
features on unlabelled target-domain inputs + ``adversarial`` x a domain-adversarial term (a small
domain discriminator on the features, trained to tell client from target, which the client's
feature extractor then tries to fool); the server aggregates (FedAvg) and fine-tunes the global
model on the target inputs whose clients' majority vote is clear (pseudo-labels). Features: the
input of the model's last ``nn.Linear``. The target inputs are the server's unlabelled samples
shifted into the target domain (``target_rotate``), never the target test samples.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import TransfuseError
from . import FederatedMethod, methods


def features_and_logits(model: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """(B, D) input of the model's last nn.Linear, and the (B, C) logits."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise TransfuseError("fedka needs a model whose classifier is an nn.Linear (its input is the feature)")
    grabbed: List[Tensor] = []
    handle = last[-1].register_forward_hook(lambda mod, inp, out: grabbed.append(inp[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return grabbed[-1].flatten(1), logits


def mk_mmd(a: Tensor, b: Tensor, scales: Tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> Tensor:
    """Multi-kernel (Gaussian) MMD^2 between samples a (N, D) and b (M, D), bandwidths around the mean distance."""
    x = torch.cat([a, b]).float()  # (N+M, D)
    d2 = torch.cdist(x, x).pow(2)  # (N+M, N+M)
    base = d2.detach().mean().clamp_min(1e-6)
    k = sum(torch.exp(-d2 / (base * s)) for s in scales) / len(scales)
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


@methods.register("fedka")
class FedKA(FederatedMethod):
    """FedKA: client CE + MK-MMD to the global model's target features + domain-adversarial term; server pseudo-label fine-tune."""

    def __init__(self, *, mmd: float = 1.0, adversarial: float = 0.1, target_batch: int = 64, steps: int = 20,
                 batch_size: int = 64, lr: float = 1e-3, vote: float = 0.5) -> None:
        if mmd < 0 or adversarial < 0 or steps < 0 or target_batch < 2 or batch_size < 1 or lr <= 0 or not 0 <= vote < 1:
            raise TransfuseError("fedka needs mmd, adversarial, steps >= 0, target_batch >= 2, batch_size >= 1, lr > 0, 0 <= vote < 1")
        self.mmd, self.adversarial, self.target_batch = mmd, adversarial, target_batch
        self.steps, self.batch_size, self.lr, self.vote = steps, batch_size, lr, vote
        self.target: Optional[Tensor] = None
        self._global: Optional[nn.Module] = None
        self._global_key: Optional[int] = None
        self._disc: Optional[nn.Module] = None
        self._disc_opt: Optional[torch.optim.Optimizer] = None
        self._gen = torch.Generator().manual_seed(0)

    def bind(self, *, transfer: Optional[Tensor], target: Optional[Tensor]) -> None:
        if target is None:
            raise TransfuseError("fedka needs target-domain inputs: set target_rotate=DEGREES and server_data=N")
        self.target = target
        self._global_key = None  # bound once per client update: the next loss call freezes that client's start

    def client_loss(self, model: nn.Module, batch: Dict[str, Tensor], global_params: List[Tensor]) -> Tensor:
        assert self.target is not None, "fedka: bind() first"
        if self._global_key is None or self._global_key != id(global_params):  # a new client update: freeze its start
            self._global = copy.deepcopy(model).eval()
            with torch.no_grad():
                for p, g in zip(self._global.parameters(), global_params):
                    p.copy_(g)
            self._global_key = id(global_params)
            self._disc = None
        f_src, logits = features_and_logits(model, batch["inputs"])  # (B, D), (B, C)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        pick = torch.randint(len(self.target), (self.target_batch,), generator=self._gen)
        xt = self.target[pick]  # (T, ...)
        if self.mmd:
            with torch.no_grad():
                f_glob, _ = features_and_logits(self._global, xt)  # (T, D)
            loss = loss + self.mmd * mk_mmd(f_src, f_glob)
        if self.adversarial:
            f_tgt, _ = features_and_logits(model, xt)  # (T, D)
            if self._disc is None:
                self._disc = nn.Sequential(nn.Linear(f_src.shape[1], 64), nn.ReLU(), nn.Linear(64, 1))
                self._disc_opt = torch.optim.Adam(self._disc.parameters(), lr=1e-3)
            dom = torch.cat([torch.zeros(len(f_src)), torch.ones(len(f_tgt))])  # 0: client, 1: target
            d_loss = F.binary_cross_entropy_with_logits(self._disc(torch.cat([f_src, f_tgt]).detach()).squeeze(-1), dom)
            self._disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self._disc_opt.step()
            # the feature extractor fools the discriminator (flipped domain labels)
            fool = F.binary_cross_entropy_with_logits(self._disc(torch.cat([f_src, f_tgt])).squeeze(-1), 1 - dom)
            loss = loss + self.adversarial * fool
        return loss

    def server_transfer(self, model: nn.Module, client_models: List[nn.Module], transfer: Optional[Tensor],
                        generator: torch.Generator, client_ids: List[int]) -> Dict[str, float]:
        assert self.target is not None, "fedka: bind() first"
        with torch.no_grad():
            votes = torch.stack([m.eval()(self.target).argmax(-1) for m in client_models])  # (K, S)
            C = int(votes.max()) + 1
            counts = F.one_hot(votes, C).sum(0)  # (S, C)
            top, label = counts.max(-1)
            keep = (top.float() / len(client_models)) > self.vote  # a clear majority
        xs, ys = self.target[keep], label[keep]
        if len(xs) and self.steps:
            opt = torch.optim.Adam(model.parameters(), lr=self.lr)
            model.train()
            for _ in range(self.steps):
                pick = torch.randint(len(xs), (min(self.batch_size, len(xs)),), generator=generator)
                loss = F.cross_entropy(model(xs[pick]).float(), ys[pick])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return {"pseudo_labelled": float(keep.float().mean())}
