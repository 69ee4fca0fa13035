"""Reading merge inputs tensor by tensor and writing the output folder atomically.

Inputs: a Hugging Face folder (sharded safetensors + index, or one file), a single
``.safetensors`` file, a PEFT LoRA adapter folder (dW = B A * alpha / r, computed per tensor),
or, only when the user allows it, a pickle checkpoint (read whole: pickle cannot be streamed).

Safetensors are read at the offsets of the file's header, so a tensor, or a block of its rows,
is read without loading anything else, from several threads at once. The merge's hot path
(``read_into`` for the torch path, ``array`` for the fused kernels) reads straight out of a
private (copy-on-write) memory map of the file, then drops that range from the mapping
(``MADV_DONTNEED``): no copy through a byte buffer (pread measured 1.5x slower here) and nothing
stays resident after use. ``read`` (tensors copied as they are, LoRA factors) uses positional
reads into fresh memory.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

from .._lazy import torch
from ..errors import TransfuseError
from .dtypes import BF16, BY_CODE, F16, F32, DType, of_torch

if TYPE_CHECKING:
    from torch import Tensor

# dtypes the fused kernels read and write, as the numpy arrays they see (16-bit formats as their
# bit patterns: bfloat16 as uint16, float16 as int16, so that the kernels can tell them apart)
KERNEL_NP_DTYPES = {BF16: np.dtype(np.uint16), F16: np.dtype(np.int16), F32: np.dtype(np.float32)}
KERNEL_DTYPES = tuple(KERNEL_NP_DTYPES)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt",
    "added_tokens.json", "chat_template.jinja", "preprocessor_config.json",
)


@dataclass
class TensorInfo:
    file: Path
    dtype: DType
    shape: Tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def read_header(path: Path) -> Dict[str, TensorInfo]:
    """Parse a safetensors header; a corrupt or truncated file is one clear error."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100_000_000):
                raise ValueError("header length beyond the end of the file")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise TransfuseError(f"{str(path)!r} is not a readable safetensors file ({exc}); re-download or re-save it") from None
    out: Dict[str, TensorInfo] = {}
    base = 8 + n
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta.get("dtype") not in BY_CODE:
            raise TransfuseError(f"{str(path)!r}: tensor {name!r} has unsupported dtype {meta.get('dtype')!r}")
        a, b = meta["data_offsets"]
        if base + b > size:
            raise TransfuseError(f"{str(path)!r} is truncated (tensor {name!r} ends past the end of the file); re-download it")
        out[name] = TensorInfo(path, BY_CODE[meta["dtype"]], tuple(meta["shape"]), base + a, base + b)
    return out


def _pread_into(fd: int, buf, offset: int) -> None:
    view = memoryview(buf)
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise TransfuseError("unexpected end of file while reading a tensor; the input is truncated")
        done += got


class Source:
    """One input model. ``names`` -> shapes/dtypes; ``read(name, rows)`` -> tensor (a row block)."""

    kind = "source"
    path: Path
    config_dir: Optional[Path] = None

    def infos(self) -> Dict[str, Tuple[Tuple[int, ...], DType]]:  # pragma: no cover
        raise NotImplementedError

    def read(self, name: str, rows: Optional[slice] = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def files(self) -> List[Path]:  # pragma: no cover
        raise NotImplementedError

    def config(self) -> dict:
        if self.config_dir and (self.config_dir / "config.json").exists():
            try:
                return json.loads((self.config_dir / "config.json").read_text())
            except (OSError, ValueError):
                raise TransfuseError(f"{str(self.config_dir / 'config.json')!r} is not valid JSON") from None
        return {}

    def close(self) -> None:
        pass


class SafetensorsSource(Source):
    kind = "safetensors"

    def __init__(self, path: Path, files: List[Path], config_dir: Optional[Path]) -> None:
        self.path = path
        self.config_dir = config_dir
        self._files = files
        self.table: Dict[str, TensorInfo] = {}
        for f in files:
            for name, info in read_header(f).items():
                if name in self.table:
                    raise TransfuseError(f"tensor {name!r} appears in two files of {str(path)!r}")
                self.table[name] = info
        self._fds: Dict[Path, int] = {}
        self._maps: Dict[Path, mmap.mmap] = {}
        self._map_lock = threading.Lock()

    def infos(self):
        return {n: (i.shape, i.dtype) for n, i in self.table.items()}

    def files(self) -> List[Path]:
        return list(self._files)

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds.setdefault(file, os.open(file, os.O_RDONLY))
        return fd

    def _map(self, file: Path) -> mmap.mmap:
        m = self._maps.get(file)
        if m is None:
            with self._map_lock:
                m = self._maps.get(file)
                if m is None:
                    # copy-on-write: torch wants a writable buffer, and a stray write could
                    # only ever touch private pages, never the user's file
                    m = self._maps[file] = mmap.mmap(self._fd(file), 0, access=mmap.ACCESS_COPY)
        return m

    def read_into(self, name: str, rows: Optional[slice], out: Tensor) -> None:
        """Convert a tensor (or rows) from the file's memory map into ``out``, then unmap the pages."""
        start, end, shape, dtype = self._span(name, rows)
        if end <= start:
            return
        m = self._map(self.table[name].file)
        src = torch.frombuffer(m, dtype=torch.uint8, count=end - start, offset=start)  # only read
        out.copy_(src.view(dtype.torch).reshape(shape))
        del src
        # Only drops this process's page-table entries (the page cache keeps the data): peak RSS
        # stays a few blocks. A page shared with a neighbouring block is simply faulted in again.
        self.release(name, rows)

    def array(self, name: str, rows: Optional[slice]):
        """Zero-copy 1-D numpy view of a tensor (or rows) in the file's memory map, for the fused
        kernels (``KERNEL_NP_DTYPES``: 16-bit formats as bit patterns). ``release`` unmaps its pages after use."""
        start, end, shape, dtype = self._span(name, rows)
        np_dtype = KERNEL_NP_DTYPES[dtype]
        return np.frombuffer(self._map(self.table[name].file), dtype=np_dtype, count=(end - start) // np_dtype.itemsize, offset=start)

    def release(self, name: str, rows: Optional[slice]) -> None:
        start, end, _, _ = self._span(name, rows)
        if end > start:
            page0 = start - start % mmap.PAGESIZE
            self._map(self.table[name].file).madvise(mmap.MADV_DONTNEED, page0, end - page0)

    def _span(self, name: str, rows: Optional[slice]):
        info = self.table[name]
        start, end = info.start, info.end
        shape = list(info.shape)
        if rows is not None and shape:
            row_bytes = (end - start) // max(shape[0], 1)
            r0, r1, _ = rows.indices(shape[0])
            start, end = start + r0 * row_bytes, start + r1 * row_bytes
            shape[0] = r1 - r0
        return start, end, shape, info.dtype

    def read(self, name: str, rows: Optional[slice] = None) -> Tensor:
        info = self.table[name]
        start, end, shape, _ = self._span(name, rows)
        buf = bytearray(end - start)
        if buf:
            _pread_into(self._fd(info.file), buf, start)
            t = torch.frombuffer(buf, dtype=torch.uint8)
        else:
            t = torch.empty(0, dtype=torch.uint8)
        return t.view(info.dtype.torch).reshape(shape)

    def close(self) -> None:
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a tensor still views it; the mapping goes when that tensor does
                pass
        self._maps.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class PickleSource(Source):
    """A torch pickle checkpoint, loaded whole (only with --allow-pickle)."""

    kind = "pickle"

    def __init__(self, path: Path, file: Path, config_dir: Optional[Path]) -> None:
        self.path, self.config_dir, self._file = path, config_dir, file
        try:
            sd = torch.load(file, map_location="cpu", weights_only=False, mmap=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's file
            raise TransfuseError(f"could not load pickle checkpoint {str(file)!r} ({type(exc).__name__}); re-save it as safetensors") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise TransfuseError(f"{str(file)!r} does not hold a state dict of tensors")
        self.sd: Dict[str, Tensor] = sd

    def infos(self):
        return {n: (tuple(t.shape), of_torch(t.dtype, f"tensor {n!r} of {str(self._file)!r}")) for n, t in self.sd.items()}

    def files(self) -> List[Path]:
        return [self._file]

    def read(self, name: str, rows: Optional[slice] = None) -> Tensor:
        t = self.sd[name]
        return (t[rows] if rows is not None and t.dim() else t).contiguous()


class LoraSource(Source):
    """A PEFT LoRA adapter over the base: per targeted weight, delta = B @ A * alpha / r.

    ``infos`` lists the *base* tensor names it changes; ``delta(name, rows)`` is the change.
    """

    kind = "lora"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config_dir = None
        try:
            cfg = json.loads((path / "adapter_config.json").read_text())
        except (OSError, ValueError):
            raise TransfuseError(f"{str(path / 'adapter_config.json')!r} is not valid JSON") from None
        files = sorted(path.glob("adapter_model*.safetensors"))
        if not files:
            if any((path / f"adapter_model{s}").exists() for s in PICKLE_SUFFIXES):
                raise TransfuseError(f"LoRA adapter {str(path)!r} is a pickle (adapter_model.bin); re-save it with safe_serialization=True")
            raise TransfuseError(f"LoRA adapter {str(path)!r} has no adapter_model.safetensors")
        self.inner = SafetensorsSource(path, files, None)
        r = int(cfg.get("r", 8))
        alpha = float(cfg.get("lora_alpha", r))
        self.scaling = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
        self.fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        self.pairs: Dict[str, Tuple[str, str]] = {}
        for key in self.inner.table:
            if ".lora_A." not in key:
                if ".lora_B." not in key and "lora_magnitude" not in key and "modules_to_save" not in key:
                    continue
                if "lora_magnitude" in key:
                    raise TransfuseError(f"{str(path)!r} is a DoRA adapter; merge it into its base first (peft merge_and_unload)")
                if "modules_to_save" in key:
                    raise TransfuseError(f"{str(path)!r} saves whole modules (modules_to_save); merge it into its base first")
                continue
            module = key.split(".lora_A.")[0]
            b_key = key.replace(".lora_A.", ".lora_B.")
            if b_key not in self.inner.table:
                raise TransfuseError(f"LoRA adapter {str(path)!r} has {key!r} but no {b_key!r}")
            base_name = module
            for prefix in ("base_model.model.",):
                if base_name.startswith(prefix):
                    base_name = base_name[len(prefix):]
            self.pairs[base_name + ".weight"] = (key, b_key)

    def infos(self):
        out = {}
        for name, (a, b) in self.pairs.items():
            (_rank, fan_in), (fan_out, _) = self.inner.table[a].shape[:2], self.inner.table[b].shape[:2]
            shape = (fan_in, fan_out) if self.fan_in_fan_out else (fan_out, fan_in)
            out[name] = (shape, self.inner.table[a].dtype)
        return out

    def files(self) -> List[Path]:
        return self.inner.files() + [self.path / "adapter_config.json"]

    def delta(self, name: str, rows: Optional[slice] = None) -> Tensor:
        a_key, b_key = self.pairs[name]
        A = self.inner.read(a_key).float().flatten(1)  # (r, in)
        if self.fan_in_fan_out:
            B = self.inner.read(b_key).float().flatten(1)  # (out, r)
            d = (B @ A).T  # (in, out) as Conv1D stores it
            return (d[rows] if rows is not None else d) * self.scaling
        B = self.inner.read(b_key, rows).float().flatten(1)  # (rows, r)
        return (B @ A) * self.scaling  # (rows, in)

    def close(self) -> None:
        self.inner.close()


def open_source(spec: str, *, allow_pickle: bool) -> Source:
    """Open a model path: HF folder, safetensors file, LoRA adapter folder, or pickle file."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise TransfuseError(f"model path {spec!r} does not exist (models are read from local folders or files)")
    if path.is_file():
        if path.suffix == ".safetensors":
            return SafetensorsSource(path, [path], path.parent)
        if path.suffix in PICKLE_SUFFIXES:
            return _pickle_or_refuse(path, path, path.parent, allow_pickle)
        raise TransfuseError(f"{spec!r} is neither a .safetensors file nor a model folder")
    if (path / "adapter_config.json").exists():
        return LoraSource(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError):
            raise TransfuseError(f"{str(index)!r} is not a valid safetensors index (no weight_map)") from None
        files = []
        for fname in dict.fromkeys(weight_map.values()):
            f = path / fname
            if not f.exists():
                raise TransfuseError(f"{str(index)!r} names shard {fname!r}, which is missing from the folder")
            files.append(f)
        return SafetensorsSource(path, files, path)
    files = sorted(path.glob("*.safetensors"))
    if files:
        return SafetensorsSource(path, files, path)
    pickles = [p for p in sorted(path.iterdir()) if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin"]
    if pickles:
        return _pickle_or_refuse(path, pickles[0], path, allow_pickle)
    raise TransfuseError(f"no weights in {spec!r}: expected *.safetensors, a safetensors index, or adapter_config.json")


def _pickle_or_refuse(path: Path, file: Path, config_dir: Path, allow_pickle: bool) -> Source:
    if not allow_pickle:
        raise TransfuseError(
            f"{str(file)!r} is a pickle checkpoint, which can run arbitrary code when loaded; "
            "convert it to safetensors, or pass --allow-pickle if you trust it"
        )
    return PickleSource(path, file, config_dir)


_HUB_BLOB = re.compile(r"[0-9a-f]{64}")
_hash_lock = threading.Lock()


def hash_cache_path() -> Path:
    """Where file digests are remembered: $TRANSFUSE_HASH_CACHE, else ~/.cache/transfuse/sha256.json."""
    env = os.environ.get("TRANSFUSE_HASH_CACHE")
    if env:
        return Path(env)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "transfuse" / "sha256.json"


def file_sha256(path: Path) -> str:
    """sha256 of one file, read once per (path, size, mtime, inode) and remembered.

    A file of the Hugging Face hub cache is a link to ``blobs/<its sha256>`` (LFS files): the
    digest is read off the name, as huggingface_hub itself does. Otherwise hashing a 2.5 GB
    model costs ~2 s of a core, which a user re-merging the same inputs should not pay again.
    """
    real = Path(path).resolve()
    if real.parent.name == "blobs" and _HUB_BLOB.fullmatch(real.name):
        return real.name
    st = real.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    cache_file = hash_cache_path()
    with _hash_lock:
        cache = _read_hash_cache(cache_file)
    hit = cache.get(str(real))
    if hit and hit.get("stat") == stamp:
        return hit["sha256"]
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        while True:
            block = fh.read(1 << 24)
            if not block:
                break
            h.update(block)
    digest = h.hexdigest()
    with _hash_lock:  # re-read: another thread or process may have added entries meanwhile
        cache = _read_hash_cache(cache_file)
        cache[str(real)] = {"stat": stamp, "sha256": digest}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_file)
        except OSError:  # a read-only home only costs the re-hash next time
            pass
    return digest


def _read_hash_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def input_sha256(files: List[Path]) -> Tuple[str, Dict[str, str]]:
    """(digest of the input, {file name: sha256}): the digest is the sha256 of the lines
    "<file name> <file sha256>" in file-name order, so each file's own digest (the hub's LFS
    sha256) can be checked too."""
    per_file = {f.name: file_sha256(f) for f in sorted(files, key=lambda p: p.name)}
    listing = "".join(f"{name} {digest}\n" for name, digest in per_file.items())
    return hashlib.sha256(listing.encode()).hexdigest(), per_file


# ----------------------------------------------------------------------------------- writing


@dataclass
class OutSpec:
    name: str
    shape: Tuple[int, ...]
    dtype: DType

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * self.dtype.itemsize


_ALIGN = 4096  # O_DIRECT needs block-aligned offsets, lengths and addresses; 4 KiB covers all disks
_STAGE = 8 << 20  # bytes staged per direct write


class _DirectSink:
    """One output file written front to back with ``O_DIRECT`` through an aligned staging buffer.

    Why not plain buffered writes: on our machines copying 2.5 GB into the page cache cost
    2.4-6.8 s (most of a merge's time) against 1.2-1.3 s for direct writes, and fsync is then
    nearly free. The engine writes each file in layout order, so staging is a plain append; a
    write anywhere else flushes what is staged and continues with buffered ``pwrite``. Where the
    file system refuses ``O_DIRECT`` (tmpfs), ``open`` returns None and the writer is buffered.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.fd = fd
        self.dfd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        self.stage = mmap.mmap(-1, _STAGE)  # page-aligned anonymous memory
        self.flushed = 0  # bytes of the file already on disk (a multiple of _ALIGN)
        self.fill = 0  # bytes staged after ``flushed``
        self.direct = True

    @classmethod
    def open(cls, path: Path, fd: int) -> Optional["_DirectSink"]:
        if not hasattr(os, "O_DIRECT"):
            return None
        try:
            return cls(path, fd)
        except OSError:
            return None

    def write(self, data: memoryview, pos: int) -> None:
        if self.direct and pos != self.flushed + self.fill:
            self._leave_direct()
        if not self.direct:
            _pwrite_all(self.fd, data, pos)
            return
        while len(data):
            n = min(len(data), _STAGE - self.fill)
            self.stage[self.fill : self.fill + n] = data[:n]
            self.fill += n
            data = data[n:]
            if self.fill == _STAGE:
                try:
                    _pwrite_all(self.dfd, memoryview(self.stage), self.flushed)
                except OSError:  # a file system that opened O_DIRECT but refuses the write
                    rest = self.flushed + self.fill
                    self._leave_direct()
                    if len(data):
                        _pwrite_all(self.fd, data, rest)
                    return
                self.flushed += _STAGE
                self.fill = 0

    def write_frame(self, frame: "OutFrame", lead: int, nbytes: int, pos: int) -> None:
        """Write ``frame``'s bytes ``[lead, lead + nbytes)`` at ``pos``, straight from the frame.

        ``lead`` is ``pos % _ALIGN``: the staged bytes of the file's last partial block go in
        front of the data, and the whole 4 KiB blocks are written from the frame itself; only the
        partial block at the end is copied, into the stage. Anything else (not the append
        point, buffered mode, a block too small to reach a 4 KiB boundary) is a plain ``write``."""
        end = lead + nbytes
        data = memoryview(frame.raw)[lead:end]
        if not self.direct or pos != self.flushed + self.fill or pos % _ALIGN != lead or end < _ALIGN:
            self.write(data, pos)
            return
        extra = self.fill - lead  # whole blocks staged before the carry (a multiple of _ALIGN)
        try:
            if extra:
                _pwrite_all(self.dfd, memoryview(self.stage)[:extra], self.flushed)
                self.flushed += extra
                self.stage[:lead] = self.stage[extra : self.fill]
                self.fill = lead
            frame.raw[:lead] = np.frombuffer(self.stage, np.uint8, lead)
            whole = end // _ALIGN * _ALIGN
            _pwrite_all(self.dfd, memoryview(frame.raw)[:whole], self.flushed)
        except OSError:  # a file system that opened O_DIRECT but refuses the write
            self._leave_direct()
            _pwrite_all(self.fd, data, pos)
            return
        self.flushed += whole
        self.stage[: end - whole] = memoryview(frame.raw)[whole:end]
        self.fill = end - whole

    def _leave_direct(self) -> None:
        """Write what is staged with a buffered write, and stay buffered from here on."""
        if self.fill:
            _pwrite_all(self.fd, memoryview(self.stage)[: self.fill], self.flushed)
        self.direct = False

    def close(self, size: int) -> None:
        if self.direct and self.fill:
            padded = -(-self.fill // _ALIGN) * _ALIGN
            self.stage[self.fill : padded] = bytes(padded - self.fill)
            try:
                _pwrite_all(self.dfd, memoryview(self.stage)[:padded], self.flushed)
            except OSError:
                self._leave_direct()
        os.close(self.dfd)
        self.stage.close()
        os.ftruncate(self.fd, size)  # drop the padding (and set the size if nothing was written)


class OutFrame:
    """Page-aligned memory for one block of output, with up to 4 KiB of room in front of it.

    A fused kernel writes a block at file position ``pos`` into ``array(lead, n, dtype)`` with
    ``lead = pos % 4096`` (``LayoutWriter.lead``). The writer then puts the file's unaligned bytes
    before ``pos`` into that room and writes the whole 4 KiB blocks with ``O_DIRECT`` from the frame
    itself, instead of copying every byte through the staging buffer (that copy was 0.6-0.8 s of
    writer CPU per 2.5 GB on 2 cores, time the kernels' threads lost)."""

    def __init__(self, capacity: int) -> None:
        self.mem = mmap.mmap(-1, capacity + _ALIGN)  # anonymous maps are page aligned
        self.raw = np.frombuffer(self.mem, np.uint8)  # (capacity + _ALIGN,)
        self.capacity = capacity

    def array(self, lead: int, n: int, dtype: np.dtype) -> np.ndarray:
        """The frame's ``n`` entries of ``dtype`` that start ``lead`` bytes in: (n,)."""
        return self.raw[lead : lead + n * dtype.itemsize].view(dtype)


def _pwrite_all(fd: int, data: memoryview, pos: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, pos)
        data, pos = data[n:], pos + n


class LayoutWriter:
    """Writes safetensors files whose layout (names, shapes, offsets) is fixed up front.

    Because every offset is known from the plan, each tensor (or row block) is written the moment
    it is computed and never held in memory: appended through ``_DirectSink`` when it continues
    the file (the engine's order), else with a positional write.
    """

    def __init__(self, folder: Path, groups: Dict[str, List[OutSpec]], *, direct: bool = True) -> None:
        self.where: Dict[str, Tuple[int, int, int]] = {}  # name -> (file index, offset, row_bytes)
        self.dtypes: Dict[str, DType] = {}
        self._convert: Optional[Tensor] = None  # reused output-dtype buffer (one writer thread)
        self.fds: List[int] = []
        self.sinks: List[Optional[_DirectSink]] = []
        self.sizes: List[int] = []  # final size of each file
        for fname, specs in groups.items():
            header: Dict[str, dict] = {"__metadata__": {"format": "pt"}}
            off = 0
            for s in specs:
                header[s.name] = {"dtype": s.dtype.code, "shape": list(s.shape), "data_offsets": [off, off + s.nbytes]}
                off += s.nbytes
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            path = folder / fname
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.fds.append(fd)
            sink = _DirectSink.open(path, fd) if direct else None
            self.sinks.append(sink)
            head = memoryview(struct.pack("<Q", len(raw)) + raw)
            if sink is not None:
                sink.write(head, 0)
            else:
                _pwrite_all(fd, head, 0)
            data0 = 8 + len(raw)
            # No ftruncate to the final size up front: on ext4, buffered pwrite into a
            # pre-extended sparse file measured 12x slower than appending; close() sets the size.
            self.sizes.append(data0 + off)
            for s in specs:
                rows = s.shape[0] if s.shape else 1
                self.dtypes[s.name] = s.dtype
                self.where[s.name] = (len(self.fds) - 1, data0 + header[s.name]["data_offsets"][0], s.nbytes // max(rows, 1))

    def write(self, name: str, t, row0: int = 0) -> None:
        """Write ``t`` (converted to the tensor's output dtype here) at its rows ``row0``...

        ``t`` is a tensor, or a 1-D numpy array already in the output dtype (a fused kernel's
        output; 16-bit formats as bit patterns). Called from one writer thread at a time (the conversion
        buffer is reused).
        """
        i, off, row_bytes = self.where[name]
        if isinstance(t, np.ndarray):
            self._put(i, memoryview(t).cast("B"), off + row0 * row_bytes)
            return
        dtype = self.dtypes[name].torch
        if t.dtype != dtype:
            n = t.numel()
            if self._convert is None or self._convert.dtype != dtype or self._convert.numel() < n:
                self._convert = torch.empty(max(n, 1 << 20), dtype=dtype)
            t = self._convert[:n].view(t.shape).copy_(t)
        self._put(i, memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()), off + row0 * row_bytes)

    def lead(self, name: str, row0: int, itemsize: int) -> int:
        """Where in an ``OutFrame`` the block of ``name`` from row ``row0`` goes: its file position
        modulo 4 KiB, or 0 where that is no multiple of ``itemsize`` (the entries must stay aligned)."""
        i, off, row_bytes = self.where[name]
        lead = (off + row0 * row_bytes) % _ALIGN
        return lead if lead % itemsize == 0 else 0

    def write_frame(self, name: str, frame: OutFrame, lead: int, nbytes: int, row0: int = 0) -> None:
        """Write the block that a kernel put into ``frame`` at ``lead`` (see ``lead``)."""
        i, off, row_bytes = self.where[name]
        pos = off + row0 * row_bytes
        if self.sinks[i] is not None:
            self.sinks[i].write_frame(frame, lead, nbytes, pos)
        else:
            _pwrite_all(self.fds[i], memoryview(frame.raw)[lead : lead + nbytes], pos)

    def _put(self, i: int, data: memoryview, pos: int) -> None:
        if self.sinks[i] is not None:
            self.sinks[i].write(data, pos)
        else:
            _pwrite_all(self.fds[i], data, pos)

    def close(self, sync: bool = True) -> None:
        for fd, sink, size in zip(self.fds, self.sinks, self.sizes):
            if sink is not None:
                sink.close(size)
            elif os.fstat(fd).st_size != size:  # zero-size tensors at the end were never written
                os.ftruncate(fd, size)
            if sync:
                os.fsync(fd)
            os.close(fd)
        self.fds.clear()
        self.sinks.clear()


def shard_layout(specs: List[OutSpec], shard_bytes: int) -> Dict[str, List[OutSpec]]:
    """Split tensors into HF-named shards of at most ``shard_bytes`` (a bigger tensor gets its own)."""
    shards: List[List[OutSpec]] = [[]]
    size = 0
    for s in specs:
        if shards[-1] and size + s.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += s.nbytes
    if len(shards) == 1:
        return {"model.safetensors": shards[0]}
    n = len(shards)
    return {f"model-{i + 1:05d}-of-{n:05d}.safetensors": group for i, group in enumerate(shards)}
