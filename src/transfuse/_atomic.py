"""Files written whole or not at all: write to a temporary name beside the target, then rename over it.

A reader (a resumed run, a second process, the user) sees the old file or the new one, never half of
one; a write that fails leaves nothing behind. ``os.replace`` is atomic within one file system, which
the temporary name beside the target guarantees.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it becomes ``path``, on error it is removed.

    The name is ``.NAME.tmp-PID``; the result gets a new file's usual mode (umask applied), not the
    0600 that ``mkstemp`` or safetensors' writer give.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # a plain new file's mode (safetensors' writer leaves 0600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any, *, indent: int = 2, **kwargs: Any) -> Path:
    return write_text(path, json.dumps(data, indent=indent, **kwargs) + "\n")


def save_safetensors(tensors: Dict[str, Any], path: str | Path, metadata: Optional[Dict[str, str]] = None) -> Path:
    """safetensors' ``save_file`` of contiguous tensors, atomically."""
    from safetensors.torch import save_file

    with replacing(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)
