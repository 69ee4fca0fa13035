"""Twin-Merging at inference: the shared model plus routed low-rank exclusive experts.

The ``twin`` merge method writes the shared model and, in ``twin_experts.safetensors``, each
expert's factors B_t (out, r), A_t (r, in) per weight (dense D_t for biases). Here every
``nn.Linear`` / ``nn.Conv2d`` with factors is wrapped so that its output gains

    sum_t route[b, t] * B_t (A_t x_b)     (plus sum_t route[b, t] D_t for its bias)

computed for the whole batch with two small matmuls (two convolutions for Conv2d), never by
rebuilding weights per sample. ``route`` (B, T) = softmax(router(features(shared model, x))):
the router is a small MLP trained on a few labelled samples of which task each input is
(:func:`train_router`), as in Twin-Merging (Lu et al., 2024). 1-D deltas of other modules
(norm scales) are not routed: those parameters keep their shared value.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import TransfuseError


class _Routed(nn.Module):
    def __init__(self, layer: nn.Module, A: Tensor, B: Tensor, D: Optional[Tensor]) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("A", A)  # (T, r, in')
        self.register_buffer("B", B)  # (T, out, r)
        self.register_buffer("D", D if D is not None else torch.zeros(0))  # (T, out) or empty
        self.route: Optional[Tensor] = None  # (batch, T), set by TwinModel for one forward

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer(x)
        r = self.route
        if r is None:
            return y
        T, R = self.A.shape[:2]
        if isinstance(self.layer, nn.Linear):
            h = torch.einsum("b...i,tri->b...tr", x, self.A)  # (b, ..., T, r)
            h = h * r.view(r.shape[0], *([1] * (x.dim() - 2)), T, 1)
            d = torch.einsum("b...tr,tor->b...o", h, self.B)  # (b, ..., out)
            if self.D.numel():
                d = d + (r @ self.D).view(r.shape[0], *([1] * (x.dim() - 2)), -1)
        else:  # Conv2d: A as T*r filters of the layer's kernel, then a 1x1 mix by B
            conv = self.layer
            k = self.A.reshape(T * R, conv.in_channels, *conv.kernel_size)
            h = F.conv2d(x, k, None, conv.stride, conv.padding, conv.dilation)  # (b, T*r, H, W)
            h = h.view(h.shape[0], T, R, *h.shape[2:]) * r.view(r.shape[0], T, 1, 1, 1)
            d = torch.einsum("btrhw,tor->bohw", h, self.B)
            if self.D.numel():
                d = d + (r @ self.D).view(r.shape[0], -1, 1, 1)
        return y + d


def make_router(in_dim: int, num_experts: int, *, hidden: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_experts))


class TwinModel(nn.Module):
    """Shared model + routed low-rank experts; ``forward(x)`` routes the whole batch at once."""

    def __init__(self, model: nn.Module, factors: Dict[str, Tensor], num_experts: int, router: nn.Module,
                 features: Callable[[nn.Module, Tensor], Tensor]) -> None:
        super().__init__()
        self.model, self.router, self.features, self.num_experts = model, router, features, num_experts
        self.routed: list = []
        for name, mod in list(model.named_modules()):
            if not isinstance(mod, (nn.Linear, nn.Conv2d)) or (isinstance(mod, nn.Conv2d) and mod.groups != 1):
                continue
            key = f"{name}.weight"
            if f"{key}::0::A" not in factors:
                continue
            A = torch.stack([factors[f"{key}::{t}::A"] for t in range(num_experts)])
            if isinstance(mod, nn.Conv2d):
                A = A.reshape(num_experts, A.shape[1], -1)
            B = torch.stack([factors[f"{key}::{t}::B"] for t in range(num_experts)])
            bias_key = f"{name}.bias::0::D"
            D = torch.stack([factors[f"{name}.bias::{t}::D"] for t in range(num_experts)]) if bias_key in factors else None
            wrapped = _Routed(mod, A, B, D)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, wrapped)
            self.routed.append(wrapped)
        if not self.routed:
            raise TransfuseError("no Linear/Conv2d weight of the model has Twin factors; is this the twin merge's model?")

    def route(self, x: Tensor) -> Tensor:
        """(batch, T) routing weights from the shared model's features (no expert applied)."""
        return torch.softmax(self.router(self.features(self.model, x)).float(), -1)

    def forward(self, x: Tensor, *args, route: Optional[Tensor] = None, **kwargs):
        r = self.route(x) if route is None else route
        for m in self.routed:
            m.route = r
        try:
            return self.model(x, *args, **kwargs)
        finally:
            for m in self.routed:
                m.route = None


def load_twin(folder: str | Path, model: nn.Module, *, features: Callable[[nn.Module, Tensor], Tensor],
              feature_dim: int, router_hidden: int = 64) -> TwinModel:
    """Load a twin merge's output into ``model`` (same architecture) and build the TwinModel."""
    from safetensors.torch import load_file

    folder = Path(folder)
    info_path = folder / "twin.json"
    if not info_path.exists():
        raise TransfuseError(f"{str(folder)!r} is not a twin merge output (no twin.json)")
    info = json.loads(info_path.read_text())
    state: Dict[str, Tensor] = {}
    for f in sorted(folder.glob("model*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise TransfuseError(f"the model does not match the twin merge: unexpected tensor {unexpected[0]!r}")
    factors = load_file(str(folder / "twin_experts.safetensors"))
    T = len(info["experts"])
    router = make_router(feature_dim, T, hidden=router_hidden)
    if (folder / "router.safetensors").exists():
        router.load_state_dict(load_file(str(folder / "router.safetensors")))
    return TwinModel(model, factors, T, router, features)


def train_router(twin: TwinModel, batches: Iterable[Tuple[Tensor, Tensor]], *, epochs: int = 5, lr: float = 1e-3,
                 weight_decay: float = 0.0) -> list:
    """Train only the router: cross-entropy of router(features) against each input's task id."""
    opt = torch.optim.AdamW(twin.router.parameters(), lr=lr, weight_decay=weight_decay)
    data = [(x, t) for x, t in batches]
    losses = []
    for _ in range(epochs):
        for x, t in data:
            with torch.no_grad():
                f = twin.features(twin.model, x)
            loss = F.cross_entropy(twin.router(f).float(), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def save_router(twin: TwinModel, folder: str | Path) -> Path:
    from .._atomic import save_safetensors

    return save_safetensors(twin.router.state_dict(), Path(folder) / "router.safetensors")
