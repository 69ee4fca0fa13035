"""How a training set is divided among clients: iid, Dirichlet(alpha) label skew, label shards, by domain.

Every split is a pure function of the labels and a seeded generator; it returns one (n_k,) int64
tensor of positions per client, disjoint, covering every sample (shards may leave a remainder out).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ..errors import TransfuseError

KINDS = ("iid", "dirichlet", "shards", "domain")


def split_clients(labels: Tensor, clients: int, *, kind: str = "iid", alpha: float = 1.0, shards: int = 2,
                  generator: Optional[torch.Generator] = None, min_size: int = 2) -> List[Tensor]:
    """Positions (n_k,) of each of ``clients`` clients in ``labels`` (N,).

    dirichlet: per class, proportions ~ Dir(alpha) over clients (Hsu et al. 2019, as FedDF's code
    draws them), redrawn until every client has ``min_size`` samples; shards: sort by label, cut
    into clients*shards pieces, each client gets ``shards`` of them (McMahan et al. 2017);
    iid and domain: a random equal split (domain clients then see their own shift, see ``domains``).
    """
    if clients < 1:
        raise TransfuseError(f"clients must be >= 1; got {clients}")
    if kind not in KINDS:
        raise TransfuseError(f"unknown split {kind!r}; choose one of {', '.join(KINDS)}")
    n = len(labels)
    if n < clients * min_size:
        raise TransfuseError(f"{n} training samples cannot give {clients} clients {min_size} each; use fewer clients or more data")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if kind in ("iid", "domain"):
        return [p.sort().values for p in torch.randperm(n, generator=gen).chunk(clients)]
    if kind == "shards":
        if shards < 1:
            raise TransfuseError(f"shards (per client) must be >= 1; got {shards}")
        order = torch.sort(labels, stable=True).indices  # (N,) grouped by class
        pieces = order[: (n // (clients * shards)) * clients * shards].view(clients * shards, -1)  # (S, n/S)
        pick = torch.randperm(clients * shards, generator=gen).view(clients, shards)
        return [pieces[row].flatten().sort().values for row in pick]
    if alpha <= 0:
        raise TransfuseError(f"dirichlet alpha must be > 0; got {alpha}")
    classes = labels.unique()
    for _ in range(1000):
        parts: List[List[Tensor]] = [[] for _ in range(clients)]
        for c in classes:
            idx = (labels == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=gen)]
            # Dirichlet via normalised Gamma draws from our generator (torch's sampler takes no generator)
            g = _gamma(torch.full((clients,), float(alpha)), gen)  # (clients,)
            cuts = (g / g.sum()).cumsum(0).mul(len(idx)).round().long()[:-1]
            for k, piece in enumerate(torch.tensor_split(idx, cuts.tolist())):
                parts[k].append(piece)
        out = [torch.cat(p).sort().values for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise TransfuseError(f"a Dirichlet(alpha={alpha}) split left a client with fewer than {min_size} samples 1000 times; raise alpha or use fewer clients")


def _gamma(concentration: Tensor, gen: torch.Generator) -> Tensor:
    """Gamma(concentration, 1) draws from ``gen`` (Marsaglia-Tsang, boosted for shape < 1)."""
    out = torch.empty_like(concentration)
    for i, a in enumerate(concentration.tolist()):
        boost = a < 1.0
        d = (a + 1.0 if boost else a) - 1.0 / 3.0
        c = 1.0 / (9.0 * d) ** 0.5
        while True:
            x = float(torch.randn((), generator=gen))
            v = (1.0 + c * x) ** 3
            u = float(torch.rand((), generator=gen))
            if v > 0 and torch.log(torch.tensor(u)) < 0.5 * x * x + d - d * v + d * torch.log(torch.tensor(v)):
                g = d * v
                break
        if boost:
            g *= float(torch.rand((), generator=gen)) ** (1.0 / a)
        out[i] = max(g, 1e-30)
    return out


def client_domains(clients: int, domains: Sequence[float]) -> List[float]:
    """The rotation (degrees) of each client's domain: the domains dealt round-robin."""
    if not domains:
        raise TransfuseError("split kind 'domain' needs domains: a list of rotations in degrees, e.g. [0, 30, 60]")
    return [float(domains[k % len(domains)]) for k in range(clients)]
