"""Aggregation of client models: FedAvg's weighted mean, or ANY registered merge method on client deltas.

FedAvg (McMahan et al. 2017) is ``global + sum_k (n_k / n) (theta_k - global)``; a merge method
(ties, dare, task_arithmetic, pcb, ...) receives the same stacked deltas ``(K, *shape)`` and the
weights ``(K,)`` (sample counts scaled to mean 1) tensor by tensor, in memory, with its whole-model statistics passes
run over every tensor first, exactly as the streaming engine runs them on files.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..errors import TransfuseError

StateDict = Dict[str, Tensor]


def check_aggregator(name: str, params: Optional[Dict[str, Any]] = None) -> None:
    """Raise TransfuseError now when ``name`` / ``params`` cannot aggregate client deltas."""
    build_aggregator(name, params)


def build_aggregator(name: str, params: Optional[Dict[str, Any]] = None):
    if name == "fedavg":
        if params:
            raise TransfuseError(f"aggregation 'fedavg' takes no parameters; got {', '.join(params)}")
        return None
    from ..merge.methods import methods
    from ..merge.plan import build_method

    if name not in methods:
        methods.get(name)  # raises with the closest names
    inst = build_method(name, dict(params or {}))
    if inst.data_driven:
        raise TransfuseError(f"merge method {name!r} needs per-model statistics over data; aggregate with fedavg or a data-free method (ties, dare, task_arithmetic, pcb...)")
    if inst.models_required:
        raise TransfuseError(f"merge method {name!r} takes exactly {inst.models_required} models; a round's clients vary, choose another aggregation")
    return inst


def aggregate(global_sd: StateDict, client_sds: Sequence[StateDict], weights: Sequence[float], *,
              name: str = "fedavg", params: Optional[Dict[str, Any]] = None, seed: int = 0) -> StateDict:
    """The new global state dict from the clients' state dicts and their weights (e.g. sample counts)."""
    from ..merge._ops import seed_for
    from ..merge.methods import TensorContext

    if not client_sds:
        return {k: v.clone() for k, v in global_sd.items()}
    w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
    # (K,) mean 1, as a merge of K models of weight 1 (equal clients: weight 1 each); FedAvg uses w / w.sum(),
    # which task_arithmetic(normalize=true) reproduces
    w = w / w.mean()
    inst = build_aggregator(name, params)
    K = len(client_sds)
    floats = [k for k, v in global_sd.items() if v.is_floating_point()]

    def stacked(key: str) -> Tensor:
        x = torch.stack([sd[key].float() for sd in client_sds])  # (K, *shape)
        if inst is None or inst.operates_on == "deltas":
            x -= global_sd[key].float()
        return x

    def context(key: str) -> TensorContext:
        per = {p: [float(getattr(inst, p))] * K for p in inst.per_model_params}
        shape = tuple(global_sd[key].shape)
        return TensorContext(key, global_sd[key].float(), seed_for(seed, key, 0), per,
                  {"rows": None, "shape": shape, "statistics": [None] * K}, seed=seed)

    out: StateDict = {}
    if inst is not None:
        for p in range(inst.passes):  # whole-model statistics (ties' global top-k, PCB's quantiles)
            for key in floats:
                inst.observe(p, stacked(key), w, context(key))
            inst.finish_pass(p)
    for key, g in global_sd.items():
        if key not in floats:
            out[key] = client_sds[0][key].clone()  # counters (BatchNorm's num_batches_tracked)
            continue
        x = stacked(key)
        if inst is None:
            merged = torch.einsum("k,k...->...", w / w.sum(), x)  # (*shape) weighted mean delta
        else:
            ctx = context(key)
            state: Dict[str, Any] = {}
            ctx.extra["state"] = state
            for p in range(inst.tensor_passes):
                inst.observe_tensor(p, x, w, ctx, state)
            merged = inst(x.clone(), w, ctx)
        if inst is None or inst.operates_on == "deltas":
            merged = g.float() + merged
        out[key] = merged.to(g.dtype)
    return out


def state_bytes(sd: StateDict) -> int:
    """Bytes a state dict takes on the wire (its tensors' raw bytes)."""
    return sum(v.numel() * v.element_size() for v in sd.values())


def clone_state(sd: StateDict) -> StateDict:
    return {k: v.detach().clone() for k, v in sd.items()}


__all__: List[str] = ["aggregate", "build_aggregator", "check_aggregator", "state_bytes", "clone_state"]
