"""The streaming merge executor.

Two paths, chosen per tensor:

- fused (``kernels.py``): when numba is present, the method has a kernel for its configuration
  and every input is a safetensors file of bfloat16/float16/float32, each block of 2M entries goes from
  the inputs' memory maps through one numba kernel straight into an output block (TIES first
  runs its selection passes: a sampled bracket, then one exact counting pass);
- torch: positional block reads converted to the compute dtype (a thread pool keeps
  ``prefetch`` blocks in flight) -> task vectors -> the method as torch ops. torch itself is
  imported (``transfuse._lazy``) only when some tensor takes this path: a merge the
  kernels cover never pays its ~1.4 s of import and exit.

Either way the merged block goes to a writer thread that appends it to its output shard
(O_DIRECT where the file system allows it) and gives the block's memory back. Methods with
whole-model statistics get their passes first, streamed the same way. Peak memory is a few
blocks per model, not the model size; read pages are unmapped after use. The output folder is
built under a hidden temporary name beside the target and renamed into place only when complete.
"""
from __future__ import annotations

import collections
import math
import queue
import datetime
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .._lazy import import_now, torch
from ..errors import TransfuseError
from ._ops import seed_for
from ._outdir import move_into_place
from .config import parse_size
from . import chat_templates, kernels
from .dtypes import F32
from .io import KERNEL_DTYPES, KERNEL_NP_DTYPES, SIDE_FILES, LayoutWriter, LoraSource, OutFrame, OutSpec, SafetensorsSource, input_sha256, shard_layout
from .methods import MergeMethod, TensorContext
from .plan import Plan, TensorPlan
from .vocab import needed as vocabulary_needed, write_tokenizer

if TYPE_CHECKING:
    from torch import Tensor

FAST_ELEMS = 1 << 21  # elements per model in one block of the fused path (read from the maps, no float32 copy)
KEEP_MAPPED_BYTES = 256 << 20  # fused path: a tensor up to this size (all inputs) stays mapped between its passes
CHUNK_ELEMS = 1 << 20  # elements per model in one row block (4 MiB in float32: the K+1 blocks stay in L3)
WHOLE_ELEMS = 1 << 23  # per-tensor statistics: up to this many elements (all models) merged whole, in memory
TMP_TAG = ".transfuse-tmp-"


def row_blocks(shape: Tuple[int, ...], elems: Optional[int] = None) -> List[Optional[slice]]:
    """Row slices of at most ``elems`` (default CHUNK_ELEMS) elements; [None] when the tensor is one block."""
    if len(shape) == 0:
        return [None]
    per_row = 1
    for s in shape[1:]:
        per_row *= s
    step = max(1, (elems or CHUNK_ELEMS) // max(per_row, 1))
    if step >= shape[0]:
        return [None]
    return [slice(r, min(r + step, shape[0])) for r in range(0, shape[0], step)]


class _Loader:
    """Reads one tensor (or a row block) of every input as compute-dtype tensors."""

    def __init__(self, plan: Plan, pool: Optional["_Pool"] = None) -> None:
        self.plan = plan
        self.pool = pool or _Pool(0, 0)

    @property
    def dt(self) -> "torch.dtype":
        return self.plan.compute_dtype.torch

    def _read_expert(self, i: int, tp: TensorPlan, r0: int, r1: int, has_rows: bool) -> Tensor:
        src = self.plan.experts[i]
        if isinstance(src, LoraSource):
            base = self._read_ref(tp, r0, r1, has_rows)
            if tp.name in src.pairs:
                d = src.delta(tp.name, slice(r0, r1) if has_rows else None)
                return base + d.reshape(base.shape).to(self.dt)
            return base
        name = tp.alias[i] or tp.name
        if not has_rows:
            return src.read(name).to(self.dt)
        avail = min(r1, tp.rows_in[i])
        parts = []
        if avail > r0:
            parts.append(src.read(name, slice(r0, avail)).to(self.dt))
        if avail < r1:  # vocab_policy pad: rows the expert lacks come from the reference
            parts.append(self.plan.reference.read(tp.name, slice(max(r0, avail), r1)).to(self.dt))
        return parts[0] if len(parts) == 1 else torch.cat(parts, 0)

    def _read_ref(self, tp: TensorPlan, r0: int, r1: int, has_rows: bool) -> Tensor:
        return self.plan.reference.read(tp.name, slice(r0, r1) if has_rows else None).to(self.dt)

    def __call__(self, tp: TensorPlan, rows: Optional[slice], method: Optional[MergeMethod]):
        """(x (K, rows, ...), base (rows, ...) or None, pooled buffer to give back or None)."""
        has_rows = len(tp.shape) > 0
        r0, r1 = (rows.start, rows.stop) if rows is not None else (0, tp.shape[0] if has_rows else 0)
        sl = slice(r0, r1) if has_rows else None
        if method is None:  # copied tensor
            return self.plan.reference.read(tp.name, sl), None, None
        K = len(self.plan.experts)
        shape = ((r1 - r0, *tp.shape[1:]) if has_rows else ())
        n = int(torch.Size(shape).numel())
        buf = self.pool.get(n * (K + 1)) if self.dt == torch.float32 else None
        flat = buf if buf is not None else torch.empty(n * (K + 1), dtype=self.dt)
        x = flat[: K * n].view(K, *shape)  # (K, rows, ...): converted in place, no stack copy
        base = None
        if self.plan.base is not None:
            base = flat[K * n : (K + 1) * n].view(shape)
            if not tp.vocab:
                _read_into(self.plan.reference, tp.name, sl, base)
        if tp.vocab:  # rows rebuilt per token of the output vocabulary
            self._read_vocab(tp, r0, r1, x, base)
            for i in range(K):
                if method.operates_on == "deltas":
                    x[i].sub_(base)
            return x, base, buf
        for i, src in enumerate(self.plan.experts):
            if isinstance(src, LoraSource) or tp.alias[i] or (has_rows and tp.rows_in[i] < r1):
                x[i].copy_(self._read_expert(i, tp, r0, r1, has_rows))
            else:
                _read_into(src, tp.name, sl, x[i])
            if method.operates_on == "deltas":
                x[i].sub_(base)
        return x, base, buf


    def _read_vocab(self, tp: TensorPlan, r0: int, r1: int, x: Tensor, base: Optional[Tensor]) -> None:
        """x[i] (and base) <- rows [r0, r1) of each model's tensor rebuilt on the output vocabulary."""
        plan, vocab = self.plan, self.plan.vocabulary
        where, expert_models, base_model = plan.vocab_inputs(tp)
        models = tuple(dict.fromkeys(([base_model] if base_model else []) + expert_models))

        def read_row(model: str, row: int) -> Tensor:
            src, name = where[model]
            return src.read(name, slice(row, row + 1))[0].float()

        def rebuilt(model: str) -> Tensor:
            src, name = where[model]
            return vocab.read(model, tp.name, r0, r1, lambda lo, hi: src.read(name, slice(lo, hi)), read_row, tp.shape[1:],
                              models, base_model)

        if base is not None:
            base.copy_(rebuilt(base_model))
        for i, m in enumerate(expert_models):
            x[i].copy_(rebuilt(m))


def _read_into(src, name: str, rows: Optional[slice], out: Tensor) -> None:
    if hasattr(src, "read_into"):
        src.read_into(name, rows, out)
    else:
        out.copy_(src.read(name, rows))


class _Pool:
    """Reusable float32 buffers for row blocks: bounded memory, no fresh page faults per block."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self.free: "queue.Queue[Tensor]" = queue.Queue()
        self.unmade = count  # buffers are made on first need (a fused-only merge needs none)
        self.lock = threading.Lock()

    def get(self, n: int) -> Optional[Tensor]:
        if n > self.size:
            return None
        with self.lock:
            make = self.unmade > 0 and self.free.empty()
            self.unmade -= make
        return (torch.empty(self.size, dtype=torch.float32) if make else self.free.get())[:n]

    def put(self, buf: Optional[Tensor]) -> None:
        if buf is not None:
            base = buf._base if buf._base is not None else buf
            self.free.put(base)


def _pipelined(units: List[Any], fn: Callable[[Any], Any], threads: int, prefetch: int) -> Iterator[Tuple[Any, Any]]:
    """Yield (unit, fn(unit)) in order while up to ``prefetch`` later units are being read."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="transfuse-read") as pool:
        pending: collections.deque = collections.deque()
        it = iter(units)
        for u in it:
            pending.append((u, pool.submit(fn, u)))
            if len(pending) >= prefetch:
                break
        while pending:
            u, fut = pending.popleft()
            for nxt in it:
                pending.append((nxt, pool.submit(fn, nxt)))
                break
            yield u, fut.result()


class _Writes:
    """A writer thread with a bound on pending writes (so memory stays bounded)."""

    LIMIT = 4

    def __init__(self, limit: int = LIMIT) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transfuse-write")
        self.sem = threading.Semaphore(limit)
        self.futures: List[Future] = []

    def submit(self, fn: Callable, *args: Any, after: Optional[Callable[[], None]] = None) -> None:
        """Run fn(*args) on the writer thread, then ``after`` (e.g. give a scratch buffer back)."""
        self.sem.acquire()

        def run() -> None:
            try:
                fn(*args)
            finally:
                if after is not None:
                    after()
                self.sem.release()

        self.futures.append(self.pool.submit(run))
        if len(self.futures) > 64:
            done = [f for f in self.futures if f.done()]
            for f in done:
                f.result()
            self.futures = [f for f in self.futures if not f.done()]

    def finish(self) -> None:
        self.pool.shutdown(wait=True)
        for f in self.futures:
            f.result()


def _ctx(plan: Plan, inst: MergeMethod, tp: TensorPlan, rows: Optional[slice], base: Optional[Tensor]) -> TensorContext:
    r0 = rows.start if rows is not None else 0
    per_model = plan.group_per_model[tp.group] if tp.group >= 0 else plan.per_model
    params = {key: [float(p.get(key, getattr(inst, key))) for p in per_model] for key in inst.per_model_params}
    stats = []
    for s in plan.statistics:
        if s is None:
            stats.append(None)
            continue
        names = getattr(s, "_names", None)
        if names is None:
            names = s._names = set(s.infos())
        stats.append((lambda src, name, has: (lambda r=None: src.read(name, r).float() if has else None))(s, tp.name, tp.name in names))
    extra = {"rows": rows, "shape": tp.shape, "statistics": stats}
    start = r0 * math.prod(tp.shape[1:]) if tp.shape else 0
    return TensorContext(tp.name, base, seed_for(plan.config.seed, tp.name, r0), params, extra, seed=plan.config.seed, start=start)


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.t0, self.last = total, 0, enabled, time.time(), 0.0

    def step(self, n: int, what: str) -> None:
        self.done += n
        now = time.time()
        if self.enabled and (now - self.last > 2 or self.done >= self.total):
            self.last = now
            pct = 100.0 * self.done / max(self.total, 1)
            print(f"\r{what}: {pct:5.1f}% ({self.done / 1e9:.2f} / {self.total / 1e9:.2f} GB, {now - self.t0:.0f}s)", end="", file=sys.stderr, flush=True)
            if self.done >= self.total:
                print(file=sys.stderr)


def clean_stale(out: Path) -> None:
    """Remove temp folders left beside ``out`` by merges whose process is gone (killed)."""
    for p in out.parent.glob(f".{out.name}{TMP_TAG}*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
            continue  # still running
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        shutil.rmtree(p, ignore_errors=True)


def execute(plan: Plan, out: Path, *, progress: bool = False) -> Dict[str, Any]:
    """Run the planned merge into ``out`` (atomically). Returns a small summary."""
    cfg = plan.config
    K = len(plan.experts)
    loader = _Loader(plan, _Pool(cfg.prefetch + _Writes.LIMIT + 1, (K + 1) * CHUNK_ELEMS))
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = out.parent / f".{out.name}{TMP_TAG}{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    t_start = time.time()
    hashes: Dict[str, str] = {}
    file_hashes: Dict[str, Dict[str, str]] = {}
    hasher = None
    if cfg.hash_inputs == "sha256":
        def _hash_all() -> None:
            srcs = ([("base_model", plan.base)] if plan.base is not None else []) + [(m.model, e) for m, e in zip(plan.models, plan.experts)]
            for label, src in srcs:
                hashes[label], file_hashes[label] = input_sha256(src.files())
        hasher = threading.Thread(target=_hash_all, name="transfuse-hash", daemon=True)
        hasher.start()
    if not all(t.group >= 0 and _fast_ok(plan, plan.instances[t.group], t) for t in plan.tensors):
        import_now(torch)  # some tensor takes the torch path: import it here, not first in a reader thread
    try:
        # the output layout is fixed before anything is computed
        specs = [OutSpec(t.name, t.shape, t.out_dtype) for t in plan.tensors]
        layout = shard_layout(specs, parse_size(cfg.shard_size))
        extra_specs: List[OutSpec] = []
        for t in plan.tensors:
            if t.group >= 0:
                for name, shape in plan.instances[t.group].extra_specs(t.name, t.shape, K):
                    extra_specs.append(OutSpec(name, shape, F32))
        extra_file = getattr(plan.instances[0], "extra_file", None)
        passes_done = [0] * len(plan.instances)
        while True:
            _statistics_passes(plan, loader, passes_done, progress)  # 1. whole-model statistics
            writer = LayoutWriter(tmp, layout)  # 2. the merging pass (files created afresh)
            extra_writer = LayoutWriter(tmp, {extra_file: extra_specs}) if extra_specs and extra_file else None
            _merging_pass(plan, loader, writer, extra_writer, progress)
            # a merge on a guessed whole-model statistic that proves wrong: more passes, merged again
            if all([inst.fast_merged() for inst in plan.instances]):
                break
            for wr in (writer, extra_writer):
                if wr is not None:
                    wr.close(sync=False)
        writer.close()
        if extra_writer is not None:
            extra_writer.close()
        if len(layout) > 1:
            weight_map = {s.name: fname for fname, group in layout.items() for s in group}
            index = {"metadata": {"total_size": sum(s.nbytes for s in specs)}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        if extra_writer is not None:
            (tmp / "twin.json").write_text(json.dumps(plan.instances[0].artifact_info(K, [m.model for m in plan.models]), indent=2))
        _copy_side_files(plan, tmp)
        if hasher is not None:
            hasher.join()
        elapsed = time.time() - t_start
        fused = sum(1 for t in plan.tensors if t.group >= 0 and _fast_ok(plan, plan.instances[t.group], t))
        if cfg.model_card:
            (tmp / "README.md").write_text(_model_card(plan, hashes, elapsed, fused))
            if cfg.dialect == "mergekit" and cfg._source_text is not None:  # beside the card, as mergekit-yaml writes it
                (tmp / "mergekit_config.yml").write_text(cfg._source_text)
        with open(tmp / "transfuse_merge.json", "w") as f:
            json.dump({"config": cfg.model_dump(mode="json"), "inputs_sha256": hashes, "input_files_sha256": file_hashes,
                       "merge_seconds": elapsed, "fused_tensors": fused}, f, indent=2)
        # 3. into place
        if out.exists() and not cfg.overwrite:
            raise TransfuseError(f"output {str(out)!r} already exists; remove it or set overwrite: true")
        move_into_place(tmp, out, old=out.parent / f".{out.name}{TMP_TAG}old-{os.getpid()}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        plan.close()
    return {"output": str(out), "seconds": time.time() - t_start, "shards": len(layout), "tensors": len(plan.tensors)}


def _statistics_passes(plan: Plan, loader: _Loader, passes_done: List[int], progress: bool) -> None:
    """Every whole-model statistics pass each method still needs (``passes_done`` per method
    instance, updated), streamed: fused over the memory maps where every tensor of the group can
    take a kernel, else through the torch loader."""
    cfg, K = plan.config, len(plan.experts)
    for gi, inst in enumerate(plan.instances):
        group = [t for t in plan.tensors if t.group == gi]
        if inst.passes and group and all(_fast_ok(plan, inst, t) for t in group):
            numel = sum(_numel(t.shape, None) for t in group)
            while passes_done[gi] < inst.fast_pass_count():  # may grow after a pass (a sampled guess missed)
                p = passes_done[gi]
                bar = Progress(numel * K * 2, progress)
                for t in group:
                    for r in row_blocks(t.shape, FAST_ELEMS):
                        ctx = _ctx(plan, inst, t, r, None)
                        ctx.extra["group_numel"] = numel
                        with _views(plan, inst, t, r) as (xs, base):
                            inst.fast_observe(p, xs, base, ctx)
                        bar.step(_numel(t.shape, r) * K * 2, f"statistics pass {p + 1}")
                inst.finish_pass(p)
                passes_done[gi] += 1
            continue
        while passes_done[gi] < inst.passes:
            p = passes_done[gi]
            units = [(t, r) for t in group for r in row_blocks(t.shape)]
            total = sum(_numel(t.shape, r) for t, r in units) * K * 4
            bar = Progress(total, progress)
            for (t, r), (x, base, buf) in _pipelined(units, lambda u, inst=inst: loader(u[0], u[1], inst), cfg.threads, cfg.prefetch):
                inst.observe(p, x, plan.group_w(gi), _ctx(plan, inst, t, r, base))
                loader.pool.put(buf)
                bar.step(x.numel() * 4, f"statistics pass {p + 1}/{inst.passes}")
            inst.finish_pass(p)
            passes_done[gi] += 1


def _merging_pass(plan: Plan, loader: _Loader, writer: LayoutWriter, extra_writer: Optional[LayoutWriter], progress: bool) -> None:
    """Every tensor merged (or copied) and handed to the writers, in the layout's order."""
    cfg, K = plan.config, len(plan.experts)
    writes = _Writes()
    out_pool = _FramePool(_Writes.LIMIT + 1)
    units: List[Tuple[TensorPlan, Optional[slice], bool]] = []
    for t in plan.tensors:
        inst = plan.instances[t.group] if t.group >= 0 else None
        if inst is not None and _fast_ok(plan, inst, t):
            units.append((t, None, False))  # fused kernel in the compute thread
        elif inst is None or (inst.chunkable and not inst.tensor_passes):
            units += [(t, r, True) for r in row_blocks(t.shape)]
        else:
            # per-tensor statistics or no blocks: one tensor at a time, read in the compute
            # thread (no prefetch, so at most one whole tensor is in memory): whole when it is
            # small enough (exact selection in memory), else over row blocks (radix select)
            units.append((t, None, len(row_blocks(t.shape)) == 1))
    total = sum(math.prod(t.shape) * (K + 1) * 2 for t in plan.tensors)
    bar = Progress(total, progress)

    def load(u):
        t, r, eager = u
        if not eager:
            return None
        return loader(t, r, plan.instances[t.group] if t.group >= 0 else None)

    try:
        for (t, r, eager), loaded in _pipelined(units, load, cfg.threads, cfg.prefetch):
            r0 = r.start if r is not None else 0
            if t.group < 0:
                writes.submit(writer.write, t.name, loaded[0], r0)
            else:
                inst = plan.instances[t.group]
                if eager:
                    x, base, buf = loaded
                    _merge_block(plan, inst, t, r, x, base, writer, extra_writer, writes, loader.pool, buf)
                elif _fast_ok(plan, inst, t):
                    _fast_tensor(plan, inst, t, writer, writes, out_pool)
                elif not inst.chunkable or math.prod(t.shape) * K <= WHOLE_ELEMS:
                    x, base, buf = loader(t, None, inst)
                    _merge_block(plan, inst, t, None, x, base, writer, extra_writer, writes, loader.pool, buf)
                else:
                    _merge_tensor_blocks(plan, inst, t, loader, writer, writes)
            bar.step(_numel(t.shape, r) * (K + 1) * 2, "merging")
    finally:
        writes.finish()


def _numel(shape: Tuple[int, ...], rows: Optional[slice]) -> int:
    n = math.prod(shape)
    if rows is not None and shape:
        n = n // shape[0] * (rows.stop - rows.start)
    return n


def _merge_block(plan, inst, t, r, x, base, writer, extra_writer, writes, pool, buf) -> None:
    """Merge one block; the writer converts it to the output dtype and then frees ``buf``."""
    w = plan.group_w(t.group)
    ctx = _ctx(plan, inst, t, r, base)
    if inst.tensor_passes:
        state: Dict[str, Any] = {}
        ctx.extra["state"] = state
        for p in range(inst.tensor_passes):
            inst.observe_tensor(p, x, w, ctx, state)
    merged = inst(x, w, ctx)
    if inst.operates_on == "deltas":
        merged = merged.add_(base) if merged.dtype == base.dtype and merged.shape == base.shape else merged + base
    if extra_writer is not None:
        for name, value in inst.extra_outputs(x, w, ctx).items():
            writes.submit(extra_writer.write, name, value.float(), 0)
    # merged may be a view of the scratch block (methods work in place): ``buf`` goes back to
    # the pool only once the writer has converted and written it
    writes.submit(writer.write, t.name, merged, r.start if r is not None else 0, after=lambda: pool.put(buf))


def _merge_tensor_blocks(plan, inst, t, loader, writer, writes) -> None:
    """A tensor larger than one block for a method with per-tensor statistics: passes over blocks."""
    w = plan.group_w(t.group)
    blocks = row_blocks(t.shape)
    state: Dict[str, Any] = {}
    for p in range(inst.tensor_passes):
        for r in blocks:
            x, base, buf = loader(t, r, inst)
            ctx = _ctx(plan, inst, t, r, base)
            ctx.extra["state"] = state
            inst.observe_tensor(p, x, w, ctx, state)
            loader.pool.put(buf)
    for r in blocks:
        x, base, buf = loader(t, r, inst)
        ctx = _ctx(plan, inst, t, r, base)
        ctx.extra["state"] = state
        merged = inst(x, w, ctx)
        if inst.operates_on == "deltas":
            merged = merged + base
        writes.submit(writer.write, t.name, merged.to(t.out_dtype.torch), r.start)
        loader.pool.put(buf)


def _fast_ok(plan: Plan, inst: MergeMethod, t: TensorPlan) -> bool:
    """Whether tensor ``t`` can take the fused path: numba present, the method implements this
    configuration, float32 compute, every input a safetensors file holding ``t`` itself (no tied
    alias, no padded rows) in one of the kernels' dtypes (the experts all alike)."""
    if t.vocab or not (kernels.available() and inst.fast() and plan.compute_dtype == F32 and t.out_dtype in KERNEL_DTYPES):
        return False
    rows = t.shape[0] if t.shape else 0
    if any(a is not None for a in t.alias) or any(r != rows for r in t.rows_in):
        return False
    srcs = _fast_sources(plan, inst)
    if not all(isinstance(s, SafetensorsSource) and t.name in s.table and s.table[t.name].dtype in KERNEL_DTYPES for s in srcs):
        return False
    return len({s.table[t.name].dtype for s in plan.experts}) == 1


class _views:
    """Context manager: (xs tuple of K 1-D arrays, base array or None) over the memory maps of one
    block; the pages are unmapped on exit unless ``keep`` (more passes over them follow)."""

    def __init__(self, plan: Plan, inst: MergeMethod, t: TensorPlan, rows: Optional[slice], keep: bool = False) -> None:
        self.srcs = _fast_sources(plan, inst)
        self.K, self.name, self.rows, self.keep = len(plan.experts), t.name, rows, keep

    def __enter__(self):
        arrays = [s.array(self.name, self.rows) for s in self.srcs]
        return tuple(arrays[: self.K]), (arrays[self.K] if len(arrays) > self.K else None)

    def __exit__(self, *exc) -> None:
        if not self.keep:
            for s in self.srcs:
                s.release(self.name, self.rows)


def _fast_sources(plan: Plan, inst: MergeMethod) -> list:
    return list(plan.experts) + ([plan.base] if inst.operates_on == "deltas" else [])


class _FramePool:
    """Output frames of the fused path (``io.OutFrame``), reused once the writer is done with them."""

    def __init__(self, count: int) -> None:
        self.sem = threading.Semaphore(count)
        self.free: List[OutFrame] = []
        self.lock = threading.Lock()

    def get(self, nbytes: int) -> OutFrame:
        self.sem.acquire()
        with self.lock:
            frame = self.free.pop() if self.free else None
        if frame is None or frame.capacity < nbytes:
            frame = OutFrame(max(nbytes, FAST_ELEMS * 2))
        return frame

    def put(self, frame: OutFrame) -> None:
        with self.lock:
            self.free.append(frame)
        self.sem.release()


def _fast_tensor(plan: Plan, inst: MergeMethod, t: TensorPlan, writer, writes: "_Writes", pool: _FramePool) -> None:
    """One tensor through a fused kernel: its per-tensor statistics passes, then the merge,
    block by block straight from the memory maps into output blocks handed to the writer."""
    blocks = row_blocks(t.shape, FAST_ELEMS)
    w = np.asarray(plan.group_weights[t.group], np.float32)
    state: Dict[str, Any] = {}
    srcs = _fast_sources(plan, inst)
    # several passes over a tensor that is not too big: keep its pages mapped until the last one
    # (per-tensor TIES on the 1B benchmark: 5.9 s instead of 6.7 s, for +85 MB peak RSS)
    keep = inst.fast_tensor_pass_count(state) > 0 and sum(s.table[t.name].end - s.table[t.name].start for s in srcs) <= KEEP_MAPPED_BYTES
    p = 0
    merged = False
    while not merged:  # a merge on a guessed statistic that proves wrong is redone (writes go to the same place)
        while p < inst.fast_tensor_pass_count(state):  # may grow after a pass (a sampled guess missed)
            for r in blocks:
                with _views(plan, inst, t, r, keep) as (xs, base):
                    inst.fast_observe_tensor(p, xs, base, _ctx(plan, inst, t, r, None), state)
            inst.fast_finish_tensor_pass(p, state)
            p += 1
        out_np = KERNEL_NP_DTYPES[t.out_dtype]
        for r in blocks:
            row0 = r.start if r is not None else 0
            lead = writer.lead(t.name, row0, out_np.itemsize)
            with _views(plan, inst, t, r) as (xs, base):
                n = xs[0].shape[0]
                frame = pool.get(lead + n * out_np.itemsize)
                inst.fast_merge(xs, base, frame.array(lead, n, out_np), w, _ctx(plan, inst, t, r, None), state)
            writes.submit(writer.write_frame, t.name, frame, lead, n * out_np.itemsize, row0, after=lambda frame=frame: pool.put(frame))
        merged = inst.fast_tensor_merged(state)


def _copy_side_files(plan: Plan, tmp: Path) -> None:
    cfg = plan.config
    src_dir = None
    if cfg.config_from:
        p = Path(cfg.config_from)
        src_dir = p if p.is_dir() else p.parent
    elif plan.reference.config_dir is not None:
        src_dir = plan.reference.config_dir
    if src_dir is None:
        return
    tok_dir = Path(cfg.tokenizer_source) if cfg.tokenizer_source not in (None, "base", "union") else None
    if cfg.tokenizer_source == "base" and cfg.base_model:
        tok_dir = Path(cfg.base_model)
    for name in SIDE_FILES:
        is_tok = name not in ("config.json", "generation_config.json", "preprocessor_config.json")
        if is_tok and ((not cfg.copy_tokenizer and not vocabulary_needed(cfg)) or plan.vocabulary is not None):
            continue  # --no-copy-tokenizer (mergekit still writes the tokenizer a tokenizer setting names); a rebuilt vocabulary writes its own
        f = ((tok_dir or src_dir) if is_tok else src_dir) / name
        if f.exists():
            shutil.copyfile(f, tmp / name)
    if plan.vocabulary is not None:  # the output tokenizer (mergekit saves it even with --no-copy-tokenizer)
        write_tokenizer(plan.vocabulary, tmp)
    template = chat_templates.resolve(cfg.chat_template, cfg.referenced_models())
    if template:  # mergekit writes the template into the tokenizer's config (auto with no template found: none)
        tc = tmp / "tokenizer_config.json"
        data = json.loads(tc.read_text()) if tc.exists() else {}
        data["chat_template"] = template
        tc.write_text(json.dumps(data, indent=2))
    conf = tmp / "config.json"
    if plan.slice_layout is not None:  # slices: the donor's config with the stacked layer count
        conf.write_text(json.dumps(plan.slice_layout.out_config, indent=2))
    if plan.vocabulary is not None and conf.exists():  # the output vocabulary's (padded) size
        conf.write_text(json.dumps({**json.loads(conf.read_text()), "vocab_size": plan.vocabulary.rows}, indent=2))
    if conf.exists() and (cfg.out_dtype or (cfg.dialect == "mergekit" and cfg.dtype)):  # mergekit: out_dtype, else dtype
        try:
            data = json.loads(conf.read_text())
            dtype_name = plan.tensors[0].out_dtype.name if plan.tensors else cfg.out_dtype
            for key in ("torch_dtype", "dtype"):
                if key in data:
                    data[key] = dtype_name
            conf.write_text(json.dumps(data, indent=2))
        except ValueError:
            pass


def _model_card(plan: Plan, hashes: Dict[str, str], elapsed: float, fused: int = 0) -> str:
    cfg = plan.config
    lines = [
        "---",
        "tags: [merge, transfuse]",
        f"base_model: {json.dumps(cfg.base_model)}" if cfg.base_model else "",
        "---",
        f"# Merged model ({cfg.method})",
        "",
        f"Made by `transfuse merge` on {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} in {elapsed:.1f}s.",
        "",
        f"- method: `{cfg.method}`, parameters: `{json.dumps(cfg.parameters)}`",
        f"- config dialect: {cfg.dialect}" + (f" (merge_method `{cfg.method}` ran as transfuse `{plan.method_name}` with mergekit's semantics)"
                                              if cfg.dialect == "mergekit" else " (the papers' forms)"),
        f"- compute dtype: `{cfg.dtype or 'float32'}`, output dtype: `{plan.tensors[0].out_dtype.name if cfg.out_dtype or (cfg.dialect == 'mergekit' and cfg.dtype) else 'as the base'}`, seed: {cfg.seed}",
        f"- merged tensors through the fused kernels: {fused} of {sum(1 for t in plan.tensors if t.group >= 0)} (the rest: torch ops)",
    ]
    lines += [f"- note: {n}" for n in plan.notes if n.startswith(("mergekit semantics", "base_model", "architecture mismatch"))]
    if plan.slice_layout is not None:
        lines.append(f"- slices: {len(cfg.slices)} slices stacked into {plan.slice_layout.out_config.get('num_hidden_layers')} layers "
                     "(each merged position below: its models and layer ranges, slice by slice)")
    if plan.vocabulary is not None:
        src = cfg.tokenizer.source if cfg.tokenizer is not None else cfg.tokenizer_source
        lines.append(f"- tokenizer: {src}, {plan.vocabulary.n_tokens} tokens ({plan.vocabulary.rows} embedding rows), "
                     f"{plan.vocabulary.lacking()} tokens some model lacks (their rows: mergekit's defaults)")
    for o in cfg.overrides:
        lines.append(f"- override `{o.pattern}`: `{json.dumps(o.parameters)}`")
    lines += ["", "sha256 of each input: of its lines `<file> <file sha256>` in file order (each file's own digest,",
              "the Hugging Face hub's LFS sha256, is in transfuse_merge.json).", "",
              "| input | role | parameters | sha256 |", "| --- | --- | --- | --- |"]
    if cfg.base_model:
        lines.append(f"| `{cfg.base_model}` | base | | `{hashes.get('base_model', 'not computed')}` |")
    for m in plan.models:
        lines.append(f"| `{m.model}` | model | `{json.dumps(m.parameters)}` | `{hashes.get(m.model, 'not computed')}` |")
    return "\n".join(line for line in lines if line is not None) + "\n"
