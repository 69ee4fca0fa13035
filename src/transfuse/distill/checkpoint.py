"""Atomic, pickle-free checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``ckpt-<step>`` written under a temporary name and renamed into
place; the file ``latest`` (replaced atomically) names the newest complete one. A run
killed at any moment therefore leaves either the previous checkpoint or the new one.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import TransfuseError

LATEST = "latest"


def _split_tensors(obj: Any, prefix: str, tensors: Dict[str, torch.Tensor], seen: Optional[Dict[tuple, str]] = None) -> Any:
    """Replace every tensor in a nested structure by {"__tensor__": key}; collect the tensors.

    A tensor that is the same view as one already collected (tied weights: an LM's input embedding
    and output layer) becomes a reference to its key: safetensors refuses tensors sharing memory."""
    seen = {} if seen is None else seen
    if isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous().cpu()
        ptr = t.untyped_storage().data_ptr()
        sig = (ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if sig in seen:
            return {"__tensor__": seen[sig]}
        if any(k[0] == ptr for k in seen):  # another view of memory already saved: a copy of its own
            t = t.clone()
        key = prefix or "_"
        tensors[key] = t
        seen[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)] = key
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_split_tensors(k, f"{prefix}.k{i}", tensors, seen), _split_tensors(v, f"{prefix}.{i}", tensors, seen)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        kind = "__tuple__" if isinstance(obj, tuple) else "__list__"
        return {kind: [_split_tensors(v, f"{prefix}.{i}", tensors, seen) for i, v in enumerate(obj)]}
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def _join_tensors(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_join_tensors(k, tensors): _join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_join_tensors(v, tensors) for v in obj["__tuple__"])
        if "__list__" in obj:
            return [_join_tensors(v, tensors) for v in obj["__list__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def save_state(folder: Path, name: str, state: Any) -> None:
    """Write a nested state (e.g. optimizer.state_dict()) as name.safetensors + name.json."""
    tensors: Dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(state, "", tensors)
    seen = set()
    for key, t in tensors.items():  # tied weights (SmolLM2's embeddings / lm_head): safetensors refuses shared memory
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            tensors[key] = t.clone()
        seen.add(t.untyped_storage().data_ptr())
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(folder: Path, name: str) -> Any:
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return _join_tensors(json.loads((folder / f"{name}.json").read_text()), tensors)


def rng_state() -> Dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(root: Path, step: int, parts: Dict[str, Any], keep: int = 1) -> Path:
    """Write parts (name -> nested state) as root/ckpt-<step>, atomically; keep the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-ckpt-"))
    try:
        for name, state in parts.items():
            save_state(tmp, name, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    pointer_tmp = root / f".{LATEST}.tmp"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, root / LATEST)
    # Prune by age, never the one just written: a folder left by another run may sort after it.
    others = sorted((p for p in root.glob("ckpt-*") if p != final), key=lambda p: p.stat().st_mtime)
    for old in others[: max(len(others) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Optional[Path]:
    pointer = root / LATEST
    if not pointer.exists():
        return None
    folder = root / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def read_checkpoint(folder: Path, names: Tuple[str, ...]) -> Dict[str, Any]:
    try:
        return {name: load_state(folder, name) for name in names}
    except (OSError, ValueError, KeyError) as exc:
        raise TransfuseError(f"checkpoint {str(folder)!r} is unreadable ({exc}); delete it to start over") from None
