"""The distillation loop: named steps on Accelerate, composed by :func:`train`.

batch -> objective.prepare -> teacher signal (live or cached) -> student forward -> objective
-> backward -> step; each is a method of :class:`Learner`, so a recipe with several students or
its own loop composes the same steps (torchtune's manner) instead of adding flags to ``train``. The same code runs in one process or under ``accelerate launch`` (DDP;
gloo on CPU). Each micro-batch's mean loss is weighted by its share of the counted units
(samples, or tokens where ``batch.mask`` is set) in the whole accumulation window across all
processes, so accumulation and several processes give the gradient of one big batch.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler

from ..errors import TransfuseError
from ..objectives import Objective
from ..objectives._features import capture
from ..seeding import seed_torch
from ..signals import Batch, Outputs, as_batch, as_outputs
from . import checkpoint as ckpt
from .schedule import make_scheduler
from .stall import StallGuard


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> Tensor:
        """This epoch's sample positions (n,), int64."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(dataset, *, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = True) -> DataLoader:
    """A DataLoader whose order is reproducible per epoch (needed for exact resume)."""
    from ..data import collate_batch

    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, collate_fn=collate_batch)


def default_forward(model: nn.Module, batch: Batch) -> Outputs:
    """model(inputs[, attention_mask]) -> Outputs."""
    kwargs = {"attention_mask": batch.extra["attention_mask"]} if "attention_mask" in batch.extra else {}
    return as_outputs(model(batch.inputs, **kwargs))


def count_units(batch: Batch) -> int:
    """What the loss averages over: counted tokens when the batch has a mask, else samples."""
    return int(batch.mask.sum()) if batch.mask is not None else batch.size


@dataclass
class TrainResult:
    student: nn.Module
    history: List[Dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    samples_per_second: float = 0.0
    train_seconds: float = 0.0
    metrics: Dict[str, Any] = field(default_factory=dict)  # the last ``evaluate`` result ({} without one)
    warnings: List[str] = field(default_factory=list)  # e.g. the stall guard's "not learning"
    evals: List[Dict[str, Any]] = field(default_factory=list)  # with eval_every: {"step", **evaluate(...)} rows


def make_accelerator(*, mixed_precision: str = "no", cpu: bool = False) -> Accelerator:
    """An Accelerator (on the CPU when asked or when there is no GPU); in one process, a second run
    with other settings (cpu, precision) is allowed.

    Accelerate keeps its state in a process-wide singleton and refuses a new Accelerator whose
    settings differ from the first one's; a notebook that trains twice hits that. With one
    process the state holds nothing worth keeping, so it is reset; under a launcher it is not.
    Without cpu=True, Accelerate ignores a multi-process launch on a machine with no GPU.
    """
    from accelerate.state import AcceleratorState, PartialState

    cpu = cpu or not torch.cuda.is_available()

    def make() -> Accelerator:
        return Accelerator(
            mixed_precision=mixed_precision, cpu=cpu, dataloader_config=DataLoaderConfiguration(split_batches=True)
        )

    try:
        return make()
    except ValueError:
        if PartialState._shared_state and PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return make()


def _optimizer(name: str, params, *, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=momentum > 0)
    raise TransfuseError(f"unknown optimizer {name!r}; choose adamw, adam or sgd")


class _Log:
    """metrics.jsonl (+ TensorBoard when installed), written by the main process only."""

    def __init__(self, folder: Optional[Path], enabled: bool, resume_step: int) -> None:
        self.file = None
        self.tb = None
        if folder is None or not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "metrics.jsonl"
        if path.exists() and resume_step > 0:  # drop lines from after the checkpoint we resume from
            kept = [l for l in path.read_text().splitlines() if l and json.loads(l).get("step", 0) <= resume_step]
            path.write_text("".join(l + "\n" for l in kept))
        elif path.exists():
            path.unlink()
        self.file = path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(folder / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def write(self, record: Dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, record.get("step", 0))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


@dataclass
class Plan:
    """How long a run is: optimizer steps per epoch, steps in all, and the epochs that hold them."""

    steps_per_epoch: int
    total_steps: int
    epochs: int


def plan_steps(loader: DataLoader, *, epochs: int = 1, max_steps: Optional[int] = None, grad_accum: int = 1) -> Plan:
    """The step plan for ``loader`` (one optimizer step per ``grad_accum`` micro-batches)."""
    if grad_accum < 1:
        raise TransfuseError("grad_accum must be >= 1")
    micro_per_epoch = len(loader)
    if micro_per_epoch == 0:
        raise TransfuseError("the training data yields no batch; use a smaller batch size or more data")
    steps_per_epoch = math.ceil(micro_per_epoch / grad_accum)
    total_steps = max_steps if max_steps is not None else epochs * steps_per_epoch
    return Plan(steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch))


def prepare_loader(accelerator: Accelerator, loader: DataLoader) -> DataLoader:
    """The loader as Accelerate shards it over processes (the batch size is global).

    In one process on the CPU there is nothing to shard nor move, and Accelerate's wrapper
    (DataLoaderShard: RNG synchronisation, device placement, end-of-data look-ahead) costs a tiny
    student about a tenth of its step, so the loader is used as it is; the batches are the same.
    """
    if loader.batch_size is not None and loader.batch_size % accelerator.num_processes:
        raise TransfuseError(
            f"batch size {loader.batch_size} is not divisible by {accelerator.num_processes} processes; "
            "the batch size is global, so pick a multiple of the process count"
        )
    if accelerator.num_processes == 1 and accelerator.device.type == "cpu":
        return loader
    return accelerator.prepare(loader)


def epoch_batches(accelerator: Accelerator, loader: DataLoader, epoch: int, *, skip: int = 0, sampler=None) -> Iterator[Any]:
    """The micro-batches of ``epoch`` in its reproducible order, less the first ``skip`` (a resumed epoch)."""
    if _sliceable(loader):
        return _sliced_batches(loader, epoch, skip)
    epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
    # Accelerate's loaders re-seed their sampler from their own iteration counter on __iter__;
    # set it to the real epoch so a resumed run sees the same order.
    if hasattr(epoch_loader, "set_epoch"):
        epoch_loader.set_epoch(epoch)
    elif sampler is not None and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    return iter(epoch_loader)


def _sliceable(loader: Any) -> bool:
    """A make_loader loader over in-memory tensors, used as it is (one CPU process: see prepare_loader)."""
    from ..data import IndexedTensors, collate_batch

    return (
        type(loader) is DataLoader and type(loader.sampler) is EpochSampler and loader.num_workers == 0
        and loader.collate_fn is collate_batch and type(loader.dataset) is IndexedTensors and loader.batch_size is not None
    )


def _sliced_batches(loader: DataLoader, epoch: int, skip: int) -> Iterator[Any]:
    """The batches ``loader`` yields in ``epoch`` (from batch ``skip`` on), taken as slices of the epoch's
    order: the same samples in the same order without the DataLoader's per-batch machinery (index
    lists of Python ints turned back into tensors), a few percent of a tiny student's step."""
    # iterating a DataLoader draws its workers' base seed from the global generator once; draw it
    # too, so that everything random after it (dropout, augmentation) stays as it was
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
    loader.sampler.set_epoch(epoch)
    order = loader.sampler.order()  # (n,)
    size = loader.batch_size
    stop = len(order) - len(order) % size if loader.drop_last else len(order)
    for start in range(skip * size, stop, size):
        yield loader.dataset.__getitems__(order[start : start + size])


def next_window(micro_batches: Iterator[Any], grad_accum: int) -> List[Batch]:
    """The next accumulation window: up to ``grad_accum`` micro-batches as Batch (empty at the epoch's end)."""
    return [as_batch(b) for _, b in zip(range(grad_accum), micro_batches)]


_NO_CONTEXT = contextlib.nullcontext()  # reusable: entering it does nothing


def count_correct(pairs: List[tuple]) -> tuple:
    """(correct, labelled) over (predicted (B,), labels (B,)) pairs, labels -1 unlabelled: one count for all."""
    if not pairs:
        return 0, 0
    predicted, labels = (torch.cat(t) for t in zip(*pairs)) if len(pairs) > 1 else pairs[0]  # (N,), (N,)
    known = labels >= 0
    return int(((predicted == labels) & known).sum()), int(known.sum())


class StepStats:
    """What one optimizer step reports: its loss (unit-weighted over the window) and counts.

    Read lazily: a step keeps its micro-batches' losses and predicted classes as tensors, and they
    become Python numbers when first read (``loss``, ``correct``, ``labelled``; the loop counts the
    predictions of all the steps it reads at once, ``_sum_steps``): the loop reads them at a
    log line, an epoch's end, a checkpoint, or every step only where something needs it (a progress
    bar, an objective that adapts to the loss), so a step does not wait on a device-to-host copy.
    Reading ``loss`` raises the "loss became nan" error of the step it belongs to.
    """

    def __init__(self, loss: float = 0.0, correct: int = 0, labelled: int = 0, samples: int = 0, *, step: int = 0, epoch: int = 0) -> None:
        self._loss, self._correct, self._labelled, self.samples = loss, correct, labelled, samples
        self.step, self.epoch = step, epoch
        self._losses: List[tuple] = []  # (loss (), units, local units) per micro-batch, not yet read
        self._counts: List[tuple] = []  # (predicted (B,), labels (B,)) per micro-batch, not yet counted
        self.tokens = 0  # attended input tokens (token-level batches: those with a mask), for tokens/s
        self.metrics: Dict[str, float] = {}  # ``measure``'s values, unit-weighted over the window

    def add(self, loss: Tensor, units: int, local_units: int) -> None:
        self._losses.append((loss.detach(), units, local_units))

    def set_loss(self, value: float) -> None:
        """Replace the window's loss (e.g. by its mean over every process)."""
        self._losses.clear()
        self._loss = value

    def add_predictions(self, predicted: Tensor, labels: Tensor) -> None:
        """A micro-batch's predicted classes (B,) and labels (B,), -1 unlabelled: counted when first read."""
        self._counts.append((predicted, labels))

    @property
    def loss(self) -> float:
        for value, units, local_units in self._losses:
            value = float(value)
            if not math.isfinite(value):
                raise TransfuseError(
                    f"the loss became {value} at step {self.step + 1} (epoch {self.epoch + 1}); lower the learning rate "
                    "(optim.lr), set optim.grad_clip, or check the inputs for NaN/inf"
                )
            self._loss += value * float(units) / float(local_units)
        self._losses.clear()
        return self._loss

    def _read_counts(self) -> None:
        correct, labelled = count_correct(self.take_predictions())
        self._correct, self._labelled = self._correct + correct, self._labelled + labelled

    def take_predictions(self) -> List[tuple]:
        """The (predicted, labels) pairs not counted yet, moved out (the caller counts them)."""
        pairs, self._counts = self._counts, []
        return pairs

    @property
    def counted(self) -> tuple:
        """(correct, labelled) of the predictions counted so far (none read)."""
        return self._correct, self._labelled

    @property
    def correct(self) -> int:
        self._read_counts()
        return self._correct

    @property
    def labelled(self) -> int:
        self._read_counts()
        return self._labelled


@dataclass
class Progress:
    """Where a run stands: steps done, the epoch and micro-batch position to go on from, and the history."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    evals: List[Dict[str, Any]] = field(default_factory=list)  # the ``eval_every`` evaluations, by step
    # the running sums of the epoch in progress (loss, steps, correct, labelled), so that a resumed
    # epoch reports the same mean training loss as an uninterrupted one
    epoch_sums: List[float] = field(default_factory=lambda: [0.0, 0, 0, 0])


class Learner:
    """One student and what steps with it (objective, teacher, optimizer, schedule), as named steps.

    The steps, in order: ``prepare_batch`` -> ``teacher_signal`` -> ``forward`` -> ``loss`` ->
    ``backward`` (per micro-batch) -> ``optimizer_step`` -> ``end_step``; ``end_epoch`` and
    ``evaluate`` at an epoch's end; ``checkpoint_parts`` / ``load_checkpoint_parts`` for resume.
    ``train_step`` composes the per-step ones for one window and :func:`train` composes the run.
    A recipe with several students (online distillation), clients (federated) or its own task
    loop (continual learning) builds one Learner per model on one Accelerator and calls the steps
    itself, e.g. one teacher signal shared by several students.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        *,
        student: nn.Module,
        teacher: Optional[Callable[[Batch], Outputs]],
        objective: Objective,
        total_steps: int,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        schedule: str = "constant",
        warmup_steps: int = 0,
        grad_clip: Optional[float] = None,
        seed: int = 0,
        forward: Callable[[nn.Module, Batch], Outputs] = default_forward,
    ) -> None:
        _check_teacher_fits(objective, teacher)
        if hasattr(teacher, "attach"):  # a teacher made from the student itself (SelfTeacher)
            teacher.attach(student)
        objective.bind(student, teacher=getattr(teacher, "model", None))
        student.train()
        self.accelerator, self.teacher, self.objective = accelerator, teacher, objective
        self.num_processes = accelerator.num_processes  # (a property that walks Accelerate's state on each read)
        self.total_steps, self.grad_clip, self.seed, self.forward_fn = total_steps, grad_clip, seed, forward
        objective.to(accelerator.device)
        self.extra_params = [p for p in objective.parameters() if p.requires_grad]
        self.params = [p for p in student.parameters() if p.requires_grad] + self.extra_params
        opt = _optimizer(optimizer, self.params, lr=lr, weight_decay=weight_decay, momentum=momentum)
        sched = make_scheduler(opt, kind=schedule, total_steps=total_steps, warmup_steps=warmup_steps)
        self._lr_moves = not (schedule == "constant" and warmup_steps == 0)  # else stepping it changes nothing
        self.model, self.optimizer, self.scheduler = accelerator.prepare(student, opt, sched)
        if teacher is not None and hasattr(teacher, "to"):
            teacher.to(accelerator.device)
        self.student = accelerator.unwrap_model(self.model)  # the plain module (hooks, state dicts)
        # Without a gradient scaler, DeepSpeed, Megatron or XLA, Accelerate's backward and optimizer
        # step are loss.backward() and optimizer.step(), reached through per-step checks (an
        # importlib look-up for LOMO each call) that cost a tiny student a sizeable part of its step.
        from accelerate.utils import DistributedType

        special = (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM, DistributedType.XLA)
        self._direct = (
            accelerator.scaler is None and accelerator.distributed_type not in special and accelerator.gradient_accumulation_steps == 1
        )
        self.stateful_teacher = getattr(teacher, "stateful", False)
        # per-step work skipped where it does nothing: the base prepare (no input change), autocast
        # without mixed precision (Accelerate's is then a null context)
        self._changes_batch = type(objective).prepare is not Objective.prepare
        self._autocast = accelerator.autocast if accelerator.mixed_precision != "no" else lambda: _NO_CONTEXT
        self._labels_checked = False
        self._check_every_batch = accelerator.device.type != "cpu"
        #: whether the objective has a per-step hook (the base Objective.on_step_end does nothing): only then
        #: is it called, and passed the step's loss (TAID adapts to it), so otherwise no step reads its loss
        self.reads_step_loss = getattr(objective.on_step_end, "__func__", None) is not Objective.on_step_end
        self._teacher_steps = hasattr(teacher, "on_step_end")
        # set by the caller before a step whose gradient norm it wants (the stall guard samples a few);
        # the norm of that step's gradients is then in last_grad_norm
        self.record_grad_norm = False
        self.last_grad_norm: Optional[float] = None

    # -- the steps of one optimizer step -------------------------------------------------------
    def prepare_batch(self, batch: Any, *, step: int) -> Batch:
        """The objective's input change (augmentation, mixing), seeded by (seed, step) for exact resume."""
        if not self._changes_batch:
            return as_batch(batch)
        return self.objective.prepare(as_batch(batch), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + step))

    def teacher_signal(self, batch: Batch) -> Optional[Outputs]:
        """The teacher's outputs (live or cached), or None when there is none or the objective needs none."""
        if self.teacher is None or not self.objective.needs_teacher:
            return None
        features = self.objective.teacher_features
        return self.teacher(batch, features) if features else self.teacher(batch)

    def forward(self, batch: Batch) -> Outputs:
        """The student's outputs, with the features the objective reads taken by hooks."""
        if not self.objective.student_features:
            return self.forward_fn(self.model, batch)
        with capture(self.student, self.objective.student_features) as store:  # hooks on the unwrapped module
            out = self.forward_fn(self.model, batch)
        out.hidden.update(store)
        return out

    def loss(self, student_out: Outputs, teacher_out: Optional[Outputs], batch: Batch) -> Tensor:
        """The objective's mean loss over the micro-batch's units, after checking labels and class counts.

        The class counts are compared on every batch (shapes only). The label range (a max over the
        labels, read on the host) is checked on the first batch and, on the CPU, again only when the
        objective fails (an out-of-range label raises there, and the check turns that into the clear
        error); on a GPU, where a bad index is a device-side assert, on every batch.
        """
        each = self._check_every_batch or not self._labels_checked
        _check_labels(batch, student_out, teacher_out, self.objective, labels=each)  # class counts: every batch
        self._labels_checked = True
        if each:
            return self.objective(student_out, teacher_out, batch)
        try:
            return self.objective(student_out, teacher_out, batch)
        except (IndexError, RuntimeError):
            _check_labels(batch, student_out, teacher_out, self.objective)
            raise

    def no_sync(self, last: bool):
        """Hold DDP's gradient all-reduce for every micro-batch of a window but the last."""
        return _NO_CONTEXT if last else self.accelerator.no_sync(self.model)

    def backward(self, loss: Tensor, weight: float) -> None:
        """Gradients of ``loss * weight`` (weight: the micro-batch's share of the window's units)."""
        if self._direct:
            (loss if weight == 1.0 else loss * weight).backward()  # x * 1.0 is x: the same gradients
        else:
            self.accelerator.backward(loss * weight)

    def optimizer_step(self) -> None:
        """Average the objective's own gradients over processes, clip, step optimizer and schedule, clear."""
        if self.extra_params and self.num_processes > 1:
            for p in self.extra_params:
                if p.grad is not None:
                    p.grad = self.accelerator.reduce(p.grad, reduction="mean")
        if self.record_grad_norm:
            grads = [p.grad for p in self.params if p.grad is not None]
            self.last_grad_norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))) if grads else 0.0
        if self.grad_clip is not None:
            self.accelerator.clip_grad_norm_(self.params, self.grad_clip)
        optimizer = self.optimizer.optimizer if self._direct else self.optimizer  # the raw one: see __init__
        optimizer.step()
        # Accelerate's scheduler wrapper only checks what _direct rules out (skipped steps, accumulation)
        if self._lr_moves:
            (self.scheduler.scheduler if self._direct else self.scheduler).step()
        optimizer.zero_grad(set_to_none=True)

    def param_norm(self) -> float:
        """The L2 norm of all trained parameters (to judge a gradient norm against)."""
        with torch.no_grad():
            return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.detach() for p in self.params]))))

    def end_step(self, *, step: int, loss: float) -> None:
        """The objective's and teacher's per-step updates (schedules, EMA teachers)."""
        if self.reads_step_loss:
            self.objective.on_step_end(step=step, total_steps=self.total_steps, loss=loss)
        if self._teacher_steps:
            self.teacher.on_step_end(self.student)

    # -- composed ------------------------------------------------------------------------------
    def train_step(self, window: List[Any], *, step: int, epoch: int = 0,
                   measure: Optional[Callable[[Outputs, Optional[Outputs], Batch], Dict[str, float]]] = None) -> StepStats:
        """One optimizer step over an accumulation window of micro-batches (``step``: steps done before it).

        ``measure(student_out, teacher_out, batch) -> {name: value}`` (no gradient), when given, is
        averaged over the window by units into ``StepStats.metrics`` (e.g. the KL to the teacher)."""
        window = [self.prepare_batch(b, step=step) for b in window]
        accelerator = self.accelerator
        units = [count_units(b) for b in window]  # ints; float64 arithmetic below, as exact as on tensors
        local_units = sum(units)
        total_units = local_units
        if self.num_processes > 1:
            local = torch.tensor(float(local_units), dtype=torch.float64, device=accelerator.device)
            total_units = float(accelerator.reduce(local, reduction="sum"))
        stats = StepStats(step=step, epoch=epoch)
        for i, batch in enumerate(window):
            with self.no_sync(i == len(window) - 1), self._autocast():
                teacher_out = self.teacher_signal(batch)
                student_out = self.forward(batch)
                loss = self.loss(student_out, teacher_out, batch)
            self.backward(loss, units[i] * self.num_processes / total_units)
            stats.add(loss, units[i], local_units)  # checked for NaN / inf when read
            if measure is not None:
                with torch.no_grad():
                    for k, v in measure(student_out, teacher_out, batch).items():
                        stats.metrics[k] = stats.metrics.get(k, 0.0) + float(v) * float(units[i]) / float(local_units)
            if batch.mask is not None:
                attn = batch.extra.get("attention_mask")
                stats.tokens += int(attn.sum()) if attn is not None else batch.inputs.numel()
            if batch.labels is not None and student_out.logits is not None and batch.labels.dim() == 1:
                stats.add_predictions(student_out.logits.detach().argmax(-1), batch.labels)  # counted when read
            stats.samples += batch.size
        self.optimizer_step()
        if self.num_processes > 1:  # the window's loss (and measures) over every process, by units
            names = sorted(stats.metrics)
            local = torch.tensor([stats.loss] + [stats.metrics[k] for k in names], dtype=torch.float64,
                                 device=accelerator.device) * float(local_units)
            total = accelerator.reduce(local, reduction="sum") / float(total_units)
            stats.set_loss(float(total[0]))
            stats.metrics = {k: float(v) for k, v in zip(names, total[1:])}
        return stats

    # -- epoch end, evaluation, checkpoints ----------------------------------------------------
    def end_epoch(self, *, epoch: int, epochs: int) -> None:
        """The objective's and teacher's per-epoch updates (``epoch`` counts from 1)."""
        self.objective.on_epoch_end(epoch=epoch, epochs=epochs)
        if hasattr(self.teacher, "on_epoch_end"):
            self.teacher.on_epoch_end(self.student, epoch)

    def evaluate(self, fn: Callable[[nn.Module], Dict[str, Any]]) -> Dict[str, Any]:
        """``fn`` on the plain student in eval mode; training mode is restored."""
        self.student.eval()
        try:
            return fn(self.student)
        finally:
            self.student.train()

    def checkpoint_parts(self) -> Dict[str, Any]:
        """Everything of this learner that a resumed run needs."""
        parts = {
            "student": self.student.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.stateful_teacher:
            parts["teacher"] = self.teacher.state_dict()
        return parts

    def part_names(self) -> tuple:
        return ("student", "objective", "optimizer", "scheduler") + (("teacher",) if self.stateful_teacher else ())

    def load_checkpoint_parts(self, parts: Dict[str, Any]) -> None:
        if self.stateful_teacher:
            self.teacher.load_state_dict(parts["teacher"])
        self.student.load_state_dict(parts["student"])
        self.objective.load_state_dict(parts["objective"])
        self.optimizer.load_state_dict(parts["optimizer"])
        self.scheduler.load_state_dict(parts["scheduler"])


def save_checkpoint(accelerator: Accelerator, root: Optional[Path], learner: Learner, progress: Progress, *, epoch: int, position: int) -> None:
    """An atomic checkpoint of ``learner`` and the run's progress and RNG (main process writes; all wait)."""
    if root is None:
        return
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        parts = learner.checkpoint_parts()
        teacher = {"teacher": parts.pop("teacher")} if "teacher" in parts else {}
        run = {"step": progress.step, "epoch": epoch, "position": position, "history": progress.history,
               "evals": progress.evals, "epoch_sums": progress.epoch_sums if position else [0.0, 0, 0, 0]}
        ckpt.write_checkpoint(root, progress.step, {**parts, "progress": run, "rng": ckpt.rng_state(), **teacher})
    accelerator.wait_for_everyone()


def load_checkpoint(root: Path, learner: Learner) -> Progress:
    """Restore ``learner`` and the RNG from ``root``'s latest checkpoint; the progress to go on from."""
    folder = ckpt.latest_checkpoint(root)
    if folder is None:
        raise TransfuseError(f"no checkpoint to resume from in {str(root)!r}; run without --resume")
    names = learner.part_names()
    parts = ckpt.read_checkpoint(folder, names[:4] + ("progress", "rng") + names[4:])
    learner.load_checkpoint_parts(parts)
    prog = parts["progress"]
    ckpt.set_rng_state(parts["rng"])
    return Progress(step=prog["step"], epoch=prog["epoch"], position=prog["position"], history=prog["history"],
                    evals=list(prog.get("evals", [])), epoch_sums=list(prog.get("epoch_sums", [0.0, 0, 0, 0])))


def train(
    *,
    student: nn.Module,
    teacher: Optional[Callable[[Batch], Outputs]],
    objective: Objective,
    train_loader: DataLoader,
    epochs: int = 1,
    max_steps: Optional[int] = None,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    schedule: str = "constant",
    warmup_steps: int = 0,
    grad_accum: int = 1,
    grad_clip: Optional[float] = None,
    mixed_precision: str = "no",
    seed: int = 0,
    output_dir: Optional[str | Path] = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    evaluate: Optional[Callable[[nn.Module], Dict[str, Any]]] = None,
    forward: Callable[[nn.Module, Batch], Outputs] = default_forward,
    progress: Optional[bool] = None,
    log_every: int = 50,
    cpu: bool = False,
    stall_steps: int = 100,
    eval_every: int = 0,
    step_metrics: Optional[Callable[[Outputs, Optional[Outputs], Batch], Dict[str, float]]] = None,
) -> TrainResult:
    """Train ``student`` with ``objective`` against ``teacher`` (None for no teacher).

    checkpoint_every: steps between checkpoints (0: at each epoch end; needs output_dir).
    resume: continue from output_dir/checkpoints/latest (same final weights as an uninterrupted run).
    evaluate: called with the unwrapped student after each epoch; its dict joins the history.
    stall_steps: after this many steps, warn (log, stderr, result.warnings) when the loss has not moved
    or the gradients are ~0 (:class:`~transfuse.distill.stall.StallGuard`); 0 turns it off.
    eval_every: > 0: ``evaluate`` runs before training and every that many steps instead (rows in
    ``TrainResult.evals`` and metrics.jsonl, keyed by step), not at epoch ends.
    log_every: every that many steps a row of metrics.jsonl (+ TensorBoard): loss, lr, samples/s,
    tokens/s (token batches) and ``step_metrics(student_out, teacher_out, batch)``'s values.
    """
    plan = plan_steps(train_loader, epochs=epochs, max_steps=max_steps, grad_accum=grad_accum)
    output = Path(output_dir) if output_dir is not None else None
    ckpt_root = output / "checkpoints" if output is not None else None
    if resume and ckpt_root is None:
        raise TransfuseError("resume needs an output folder holding checkpoints")
    seed_torch(seed)
    accelerator = make_accelerator(mixed_precision=mixed_precision, cpu=cpu)
    learner = Learner(
        accelerator, student=student, teacher=teacher, objective=objective, total_steps=plan.total_steps,
        optimizer=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum, schedule=schedule,
        warmup_steps=warmup_steps, grad_clip=grad_clip, seed=seed, forward=forward,
    )
    loader = prepare_loader(accelerator, train_loader)
    state = load_checkpoint(ckpt_root, learner) if resume else Progress()
    log = _Log(output, accelerator.is_main_process, state.step)
    show = accelerator.is_main_process and (sys.stderr.isatty() if progress is None else progress)
    bar = _progress(show, plan.total_steps, state.step)

    train_time, samples_seen, last_eval = 0.0, 0, {}
    guard = StallGuard(after=stall_steps, start=state.step, total_steps=plan.total_steps) if stall_steps else None
    warnings: List[str] = []
    window_t0, window_samples, window_tokens = time.perf_counter(), 0, 0

    def run_eval() -> None:
        nonlocal last_eval, window_t0
        if evaluate is not None and accelerator.is_main_process:
            last_eval = learner.evaluate(evaluate)
            row = {"step": state.step, **last_eval}
            state.evals.append(row)
            log.write(row)
            if bar is not None:
                bar.note(" ".join(f"{k} {v:.4g}" for k, v in last_eval.items() if isinstance(v, (int, float))))
        window_t0 = time.perf_counter()  # rates count training time only

    if eval_every and state.step == 0:
        run_eval()
    for epoch in range(state.epoch, plan.epochs):
        if state.step >= plan.total_steps:
            break
        skip = state.position if epoch == state.epoch else 0
        micro_batches = epoch_batches(accelerator, loader, epoch, skip=skip, sampler=getattr(train_loader, "sampler", None))
        pos = skip
        loss_sum, n_steps, correct, labelled = state.epoch_sums if skip else (0.0, 0, 0, 0)
        pending: List[StepStats] = []  # steps whose loss and counts are not read yet
        t0 = time.perf_counter()
        while state.step < plan.total_steps:
            window = next_window(micro_batches, grad_accum)
            if not window:
                break
            logged = (state.step + 1) % log_every == 0
            watch = guard is not None and guard.wants_grad_norm(state.step)
            learner.record_grad_norm = watch
            stats = learner.train_step(window, step=state.step, epoch=epoch, measure=step_metrics if logged else None)
            state.step += 1
            if guard is not None and not guard.done:
                guard.observe(state.step, lambda stats=stats: stats.loss, learner.last_grad_norm if watch else None,
                              learner.param_norm() if watch else None)
                if guard.check(state.step):
                    warnings.append(guard.warning)
                    log.write({"step": state.step, "epoch": epoch + 1, "warning": guard.warning})
                    if accelerator.is_main_process:
                        print(f"warning: {guard.warning}", file=sys.stderr)
            pos += len(window)
            n_steps += 1
            samples_seen += stats.samples
            window_samples, window_tokens = window_samples + stats.samples, window_tokens + stats.tokens
            pending.append(stats)
            learner.end_step(step=state.step, loss=stats.loss if learner.reads_step_loss else math.nan)
            saving = checkpoint_every and state.step % checkpoint_every == 0 and state.step < plan.total_steps
            if bar is not None or logged or saving:  # the numbers are read only here and at the epoch's end
                loss_sum, correct, labelled = _sum_steps(pending, loss_sum, correct, labelled)
                state.epoch_sums = [loss_sum, n_steps, correct, labelled]
            if logged:  # rates over the steps since the last row, all processes together
                seconds = max(time.perf_counter() - window_t0, 1e-9)
                row = {"step": state.step, "epoch": epoch + 1, "loss": stats.loss, "lr": learner.scheduler.get_last_lr()[0],
                       "samples_per_s": window_samples * accelerator.num_processes / seconds}
                if window_tokens:
                    row["tokens_per_s"] = window_tokens * accelerator.num_processes / seconds
                row.update(stats.metrics)
                log.write(row)
                window_t0, window_samples, window_tokens = time.perf_counter(), 0, 0
                if bar is not None:
                    bar.note(" ".join(f"{k} {row[k]:.4g}" for k in ("lr", "tokens_per_s", *stats.metrics) if k in row))
            if bar is not None:
                bar.update(state.step, loss_sum / n_steps, correct / max(labelled, 1) if labelled else None, epoch + 1)
            if eval_every and state.step % eval_every == 0:
                run_eval()
            if saving:
                save_checkpoint(accelerator, ckpt_root, learner, state, epoch=epoch, position=pos)
        loss_sum, correct, labelled = _sum_steps(pending, loss_sum, correct, labelled)
        state.epoch_sums = [loss_sum, n_steps, correct, labelled]
        train_time += time.perf_counter() - t0
        learner.end_epoch(epoch=epoch + 1, epochs=plan.epochs)
        record: Dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "train_loss": loss_sum / max(n_steps, 1)}
        if labelled:
            record["train_accuracy"] = correct / labelled
        if evaluate is not None and not eval_every and accelerator.is_main_process:
            last_eval = learner.evaluate(evaluate)
            record.update(last_eval)
        state.history.append(record)
        log.write(record)
        if ckpt_root is not None and (state.step < plan.total_steps or checkpoint_every == 0):
            save_checkpoint(accelerator, ckpt_root, learner, state, epoch=epoch + 1, position=0)
    if bar is not None:
        bar.close()
    log.close()
    accelerator.wait_for_everyone()
    final = learner.student
    final.eval()
    return TrainResult(
        student=final,
        history=state.history,
        steps=state.step,
        samples_per_second=samples_seen * accelerator.num_processes / train_time if train_time else 0.0,
        train_seconds=train_time,
        metrics=dict(last_eval),
        warnings=warnings,
        evals=state.evals,
    )


def _sum_steps(pending: List[StepStats], loss_sum: float, correct: int, labelled: int) -> tuple:
    """The epoch's running sums with the ``pending`` steps read and added in order (then cleared).

    The steps' accuracy counts are taken out of them and counted together (one count, not one per step)."""
    pairs = []
    for stats in pending:
        loss_sum += stats.loss
        pairs += stats.take_predictions()
        correct, labelled = correct + stats.counted[0], labelled + stats.counted[1]  # those counted before
    more_correct, more_labelled = count_correct(pairs)
    pending.clear()
    return loss_sum, correct + more_correct, labelled + more_labelled


def _check_teacher_fits(objective: Objective, teacher: Optional[Callable]) -> None:
    """Objectives that change inputs or read teacher features need a live teacher, not a cache."""
    if teacher is None or hasattr(teacher, "model"):
        return
    name = getattr(objective, "registry_name", type(objective).__name__)
    if getattr(objective, "changes_inputs", False):
        raise TransfuseError(
            f"objective {name!r} changes the inputs before the teacher sees them, so cached teacher outputs "
            "would be wrong; set teacher.cache=false"
        )
    if objective.teacher_features:
        raise TransfuseError(
            f"objective {name!r} reads the teacher's features {list(objective.teacher_features)}, which a cache "
            "does not hold; set teacher.cache=false"
        )


def _check_labels(batch: Batch, student: Outputs, teacher: Optional[Outputs], objective: Objective, *, labels: bool = True) -> None:
    """Labels must index the classes (checked when ``labels``); teacher and student must agree on the class count."""
    logits = student.logits
    if logits is None:
        return
    classes = logits.shape[-1]
    fewer_ok = getattr(objective, "teacher_may_have_fewer_classes", False)
    t_classes = None if teacher is None or teacher.logits is None else teacher.logits.shape[-1]
    if t_classes is not None and (t_classes > classes if fewer_ok else t_classes != classes):
        raise TransfuseError(
            f"the teacher predicts {teacher.logits.shape[-1]} classes but the student {classes}; "
            "give both models the same number of outputs"
        )
    if labels and batch.labels is not None and batch.labels.numel() and int(batch.labels.max()) >= classes:
        raise TransfuseError(
            f"a label is {int(batch.labels.max())} but the student has only {classes} outputs; "
            "labels must lie in [0, num_classes) (use -1 for unlabelled samples)"
        )


class _Bar:
    def __init__(self, total: int, start: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("acc {task.fields[acc]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, epoch="-", loss="-", acc="-", note="")
        self.progress.start()

    def update(self, step: int, loss: float, acc: Optional[float], epoch: int) -> None:
        self.progress.update(
            self.task, completed=step, loss=f"{loss:.4f}", acc="-" if acc is None else f"{acc:.3f}", epoch=epoch
        )

    def note(self, text: str) -> None:
        """The latest logged values (lr, tokens/s, KL, evaluation) after the bar."""
        self.progress.update(self.task, note=text)

    def close(self) -> None:
        self.progress.stop()


def _progress(show: bool, total: int, start: int) -> Optional[_Bar]:
    return _Bar(total, start) if show else None
