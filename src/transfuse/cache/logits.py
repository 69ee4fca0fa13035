"""A classifier teacher's logits for every sample of a data set, cached on disk.

One safetensors file holds ``index`` (N,) sample ids and ``logits`` (N, C), with the
fingerprint of (teacher weights, data, transform) in its metadata. The file name carries the
fingerprint, so a changed teacher or data set gets a new file and never stale targets; a
file given explicitly whose fingerprint differs is an error.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..errors import TransfuseError
from ..signals import Batch, Outputs, as_outputs


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over a model's parameter and buffer names, dtypes, shapes and bytes (16 hex digits)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


class LogitsCache:
    """Teacher logits looked up by sample id. logits: (N, C) float32; index: (N,) int64."""

    def __init__(self, index: Tensor, logits: Tensor, fingerprint: str) -> None:
        self.logits = logits
        self.fingerprint = fingerprint
        # Dense id -> row table: ids are positions in a data set, so max id ~ N.
        self._row = torch.full((int(index.max()) + 1,), -1, dtype=torch.long)
        self._row[index] = torch.arange(len(index))

    def lookup(self, index: Tensor) -> Tensor:
        """Rows for sample ids (B,) -> logits (B, C)."""
        ids = index.long().cpu()
        if int(ids.max()) >= len(self._row) or bool((self._row[ids] < 0).any()):
            raise TransfuseError(
                "the teacher cache has no entry for some samples of this batch; "
                "it was built for another subset of the data: delete the cache file or build it for this data"
            )
        return self.logits[self._row[ids]]

    @classmethod
    def load(cls, path: str | Path, *, expected_fingerprint: Optional[str] = None) -> "LogitsCache":
        path = Path(path)
        if not path.exists():
            raise TransfuseError(f"teacher cache {str(path)!r} does not exist; build it first or set teacher.cache_path")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                index, logits = f.get_tensor("index"), f.get_tensor("logits")
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise TransfuseError(f"teacher cache {str(path)!r} is unreadable ({exc}); delete it to rebuild") from None
        found = meta.get("fingerprint", "")
        if expected_fingerprint is not None and found != expected_fingerprint:
            raise TransfuseError(
                f"teacher cache {str(path)!r} was made for another teacher, data or transform "
                f"(fingerprint {found or 'missing'} != expected {expected_fingerprint}); "
                "delete it or point teacher.cache_path elsewhere"
            )
        return cls(index, logits, found)

    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        """Atomic write: a temp file in the same folder, then rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = torch.nonzero(self._row >= 0).squeeze(1)
        index = rows[torch.argsort(self._row[rows])]
        meta = {"fingerprint": self.fingerprint, **(metadata or {})}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"index": index.contiguous(), "logits": self.logits.contiguous()}, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@torch.inference_mode()
def compute_logits(model: nn.Module, inputs: Tensor, *, batch_size: int = 1000, device: str | torch.device = "cpu") -> Tensor:
    """The model's logits over all inputs (N, ...) -> (N, C) float32, in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size].to(device)
        out.append(as_outputs(model(chunk)).logits.float().cpu())
    return torch.cat(out)


def build_or_load_logits_cache(
    model: nn.Module,
    inputs: Tensor,
    index: Tensor,
    *,
    data_fingerprint: Optional[str] = None,
    cache_dir: str | Path,
    cache_path: str | Path | None = None,
    batch_size: int = 1000,
    device: str | torch.device = "cpu",
) -> LogitsCache:
    """Load the cache for (teacher, data) if it exists, else run the teacher once and store it.

    data_fingerprint defaults to a hash of the (already transformed) inputs and their ids: the
    teacher's outputs depend on nothing else, so the labels (or which ones are kept) do not count.
    """
    if data_fingerprint is None:
        from ..data import fingerprint_tensors

        data_fingerprint = fingerprint_tensors(inputs, index)
    fingerprint = f"{model_fingerprint(model)}-{data_fingerprint}"
    path = Path(cache_path) if cache_path else Path(cache_dir) / f"teacher-{fingerprint}.safetensors"
    if path.exists():
        return LogitsCache.load(path, expected_fingerprint=fingerprint)
    logits = compute_logits(model, inputs, batch_size=batch_size, device=device)
    cache = LogitsCache(index, logits, fingerprint)
    cache.save(path, {"samples": str(len(index))})
    return cache


class CachedTeacher:
    """A teacher source reading logits from a :class:`LogitsCache` by ``batch.index``."""

    def __init__(self, cache: LogitsCache) -> None:
        self.cache = cache
        self.device: torch.device | str = "cpu"

    def to(self, device: torch.device | str) -> "CachedTeacher":
        self.device = device
        return self

    def __call__(self, batch: Batch) -> Outputs:
        if batch.index is None:
            raise TransfuseError("a cached teacher needs sample ids: the data loader must yield (inputs, labels, index)")
        return Outputs(logits=self.cache.lookup(batch.index).to(self.device, non_blocking=True))
