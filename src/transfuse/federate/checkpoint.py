"""The server's checkpoint after every round: the global model(s), the server generator, the
method's state (KnFu's targets) and the history, replaced atomically; any engine resumes from it
after the last completed round (a killed server gives the same final weights as an unbroken run)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .federation import Server, trace


def save_checkpoint(server: Server, folder: Path) -> None:
    """state.safetensors (global models, generator state, method tensors; the history in its metadata) replaced
    atomically, so a kill at any moment leaves the last complete round; history.json: a readable copy."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"models.{a}.{k}": v.contiguous() for a, sd in enumerate(server.states) for k, v in sd.items()}
    tensors["generator"] = server.generator.get_state()
    for k, v in server.method_state().items():
        tensors[f"method.{k}"] = v.contiguous()
    history = json.dumps(server.history, allow_nan=True)
    save_file(tensors, str(folder / "state.safetensors.tmp"), metadata={"history": history})
    os.replace(folder / "state.safetensors.tmp", folder / "state.safetensors")
    (folder / "history.json.tmp").write_text(history)
    os.replace(folder / "history.json.tmp", folder / "history.json")
    trace(f"saved-r{len(server.history)}")


def load_checkpoint(server: Server, folder: Path) -> int:
    """Restore the server from ``folder`` when it holds a state; returns the first round still to run."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = folder / "state.safetensors"
    if not path.exists():
        return 1
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        history = json.loads(fh.metadata()["history"])
    for a, model in enumerate(server.models):
        prefix = f"models.{a}."
        model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    server.generator.set_state(tensors["generator"])
    server.load_method_state({k[7:]: v for k, v in tensors.items() if k.startswith("method.")})
    server.history = history
    return len(history) + 1
