"""An output folder written beside its place and renamed into it (never half-written), for extract-lora and moe."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import TransfuseError


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, to replace a non-empty folder (or a file) unless ``overwrite``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise TransfuseError(f"{str(out)!r} already exists; choose another output folder or pass overwrite=True (--overwrite)")


@contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write into; on success it replaces ``out``, on error it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        move_into_place(tmp, out, old=out.with_name(f".{out.name}.old-{os.getpid()}"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def move_into_place(tmp: Path, out: Path, *, old: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an existing ``out`` is first moved to ``old`` and then removed."""
    if out.exists():
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
