"""The in-process engine: the same clients (``client_update``) and server step (``Server.round``)
as the Flower strategy, called in a plain loop (fast unit tests, and the baseline of the engine's
overhead). A client that raises is dropped for its round, as Flower drops a failed reply."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

from .aggregate import state_bytes
from .config import AggregateSpec, MethodSpec
from .federation import Federation, Server, client_update
from ..errors import TransfuseError


def run_inprocess(fed: Federation, spec: MethodSpec, aggregation: AggregateSpec, *,
                  progress: Optional[Callable[[str], None]] = None, fail: Optional[Callable[[int, int], bool]] = None,
                  checkpoint: Optional[Path] = None) -> Server:
    """Run ``fed.cfg.rounds`` rounds of ``spec``; ``fail(round, client)`` True makes that client crash (fault tests).

    ``checkpoint``: a folder the server's state is saved to after every round (atomically); when it
    holds a state, the run resumes after that round, to the same final weights as an unbroken run."""
    server = Server(fed, spec, aggregation)
    start = load_checkpoint(server, checkpoint) if checkpoint is not None else 1
    for r in range(start, fed.cfg.rounds + 1):
        g = server.state
        ids = server.sample_clients(r)
        results, dropped = [], []
        for k in ids:
            try:
                if fail is not None and fail(r, k):
                    raise RuntimeError(f"client {k} crashed (injected)")
                sd, n, metrics = client_update(fed, k, g, server.method, server_round=r)
            except (RuntimeError, MemoryError) as exc:
                dropped.append({"client": k, "error": str(exc)})
                continue
            results.append((k, sd, n, metrics))
        if not results:
            raise TransfuseError(f"round {r}: every client failed ({dropped[0]['error']}); nothing to aggregate")
        server.round(r, results, sent=len(ids) * state_bytes(g), received=sum(state_bytes(x[1]) for x in results))
        server.history[-1]["dropped"] = dropped
        if progress is not None:
            h = server.history[-1]
            progress(f"round {r}/{fed.cfg.rounds}: global acc {h['global_acc']:.3f}, mean local acc {h['mean_local_acc']:.3f}")
        if checkpoint is not None:
            save_checkpoint(server, checkpoint)
    return server


def save_checkpoint(server: Server, folder: Path) -> None:
    """model.safetensors (global model, generator state, method tensors) + history.json, each replaced atomically."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.contiguous() for k, v in server.state.items()}
    tensors["generator"] = server.generator.get_state()
    for k, v in server.method_state().items():
        tensors[f"method.{k}"] = v.contiguous()
    save_file(tensors, str(folder / "state.safetensors.tmp"))
    (folder / "history.json.tmp").write_text(json.dumps(server.history, allow_nan=True))
    os.replace(folder / "state.safetensors.tmp", folder / "state.safetensors")
    os.replace(folder / "history.json.tmp", folder / "history.json")


def load_checkpoint(server: Server, folder: Path) -> int:
    """Restore the server from ``folder`` when it holds a state; returns the first round still to run."""
    from safetensors.torch import load_file

    if not (folder / "state.safetensors").exists() or not (folder / "history.json").exists():
        return 1
    tensors = load_file(str(folder / "state.safetensors"))
    history = json.loads((folder / "history.json").read_text())
    server.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    server.generator.set_state(tensors["generator"])
    server.load_method_state({k[7:]: v for k, v in tensors.items() if k.startswith("method.")})
    server.history = history
    return len(history) + 1
