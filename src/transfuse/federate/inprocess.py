"""The in-process engine: the same clients (``client_update``) and server step (``Server.round``)
as the Flower strategy, called in a plain loop (fast unit tests, and the baseline of the engine's
overhead). A client that raises is dropped for its round, as Flower drops a failed reply."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from .aggregate import state_bytes
from .checkpoint import load_checkpoint, save_checkpoint
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
        globals_ = server.states  # one per client architecture
        ids = server.sample_clients(r)
        results, dropped = [], []
        for k in ids:
            try:
                if fail is not None and fail(r, k):
                    raise RuntimeError(f"client {k} crashed (injected)")
                sd, n, metrics = client_update(fed, k, globals_[fed.arch_of(k)], server.method, server_round=r)
            except (RuntimeError, MemoryError) as exc:
                dropped.append({"client": k, "error": str(exc)})
                continue
            results.append((k, sd, n, metrics))
        if not results:
            raise TransfuseError(f"round {r}: every client failed ({dropped[0]['error']}); nothing to aggregate")
        server.round(r, results, sent=sum(state_bytes(globals_[fed.arch_of(k)]) for k in ids), received=sum(state_bytes(x[1]) for x in results))
        server.history[-1]["dropped"] = dropped
        if progress is not None:
            h = server.history[-1]
            progress(f"round {r}/{fed.cfg.rounds}: global acc {h['global_acc']:.3f}, mean local acc {h['mean_local_acc']:.3f}")
        if checkpoint is not None:
            save_checkpoint(server, checkpoint)
    return server
