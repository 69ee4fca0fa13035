"""The distillation loop: one explicit loop on Accelerate.

batch -> objective.prepare -> teacher signal (live or cached) -> student forward -> objective
-> backward -> step. The same code runs in one process or under ``accelerate launch`` (DDP;
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
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ..errors import TransfuseError
from ..objectives import Objective
from ..objectives._features import capture
from ..signals import Batch, Outputs, as_batch, as_outputs
from . import checkpoint as ckpt
from .schedule import make_scheduler


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

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


def _accelerator(*, mixed_precision: str, cpu: bool) -> Accelerator:
    """An Accelerator; in one process, a second run with other settings (cpu, precision) is allowed.

    Accelerate keeps its state in a process-wide singleton and refuses a new Accelerator whose
    settings differ from the first one's; a notebook that trains twice hits that. With one
    process the state holds nothing worth keeping, so it is reset; under a launcher it is not.
    Without cpu=True, Accelerate ignores a multi-process launch on a machine with no GPU.
    """
    from accelerate.state import AcceleratorState, PartialState

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
) -> TrainResult:
    """Train ``student`` with ``objective`` against ``teacher`` (None for no teacher).

    checkpoint_every: steps between checkpoints (0: at each epoch end; needs output_dir).
    resume: continue from output_dir/checkpoints/latest (same final weights as an uninterrupted run).
    evaluate: called with the unwrapped student after each epoch; its dict joins the history.
    """
    if grad_accum < 1:
        raise TransfuseError("grad_accum must be >= 1")
    torch.manual_seed(seed)
    accelerator = _accelerator(mixed_precision=mixed_precision, cpu=cpu or not torch.cuda.is_available())
    output = Path(output_dir) if output_dir is not None else None
    ckpt_root = output / "checkpoints" if output is not None else None
    if resume and ckpt_root is None:
        raise TransfuseError("resume needs an output folder holding checkpoints")
    if train_loader.batch_size is not None and train_loader.batch_size % accelerator.num_processes:
        raise TransfuseError(
            f"batch size {train_loader.batch_size} is not divisible by {accelerator.num_processes} processes; "
            "the batch size is global, so pick a multiple of the process count"
        )
    _check_teacher_fits(objective, teacher)
    if hasattr(teacher, "attach"):  # a teacher made from the student itself (SelfTeacher)
        teacher.attach(student)
    objective.bind(student, teacher=getattr(teacher, "model", None))
    student.train()
    device = accelerator.device
    objective.to(device)
    extra_params = [p for p in objective.parameters() if p.requires_grad]
    params = [p for p in student.parameters() if p.requires_grad] + extra_params
    opt = _optimizer(optimizer, params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    micro_per_epoch = len(train_loader)
    if micro_per_epoch == 0:
        raise TransfuseError("the training data yields no batch; use a smaller batch size or more data")
    steps_per_epoch = math.ceil(micro_per_epoch / grad_accum)
    total_steps = max_steps if max_steps is not None else epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    sched = make_scheduler(opt, kind=schedule, total_steps=total_steps, warmup_steps=warmup_steps)
    model, opt, loader, sched = accelerator.prepare(student, opt, train_loader, sched)
    if teacher is not None and hasattr(teacher, "to"):
        teacher.to(device)
    sampler = getattr(train_loader, "sampler", None)
    unwrapped = accelerator.unwrap_model(model)

    def student_forward(batch: Batch) -> Outputs:
        if not objective.student_features:
            return forward(model, batch)
        with capture(unwrapped, objective.student_features) as store:  # hooks on the unwrapped module
            out = forward(model, batch)
        out.hidden.update(store)
        return out

    def teacher_forward(batch: Batch) -> Optional[Outputs]:
        if teacher is None or not objective.needs_teacher:
            return None
        return teacher(batch, objective.teacher_features) if objective.teacher_features else teacher(batch)

    stateful_teacher = getattr(teacher, "stateful", False)
    step, start_epoch, position, history = 0, 0, 0, []
    if resume:
        folder = ckpt.latest_checkpoint(ckpt_root)
        if folder is None:
            raise TransfuseError(f"no checkpoint to resume from in {str(ckpt_root)!r}; run without --resume")
        names = ("student", "objective", "optimizer", "scheduler", "progress", "rng")
        parts = ckpt.read_checkpoint(folder, names + (("teacher",) if stateful_teacher else ()))
        if stateful_teacher:
            teacher.load_state_dict(parts["teacher"])
        accelerator.unwrap_model(model).load_state_dict(parts["student"])
        objective.load_state_dict(parts["objective"])
        opt.load_state_dict(parts["optimizer"])
        sched.load_state_dict(parts["scheduler"])
        prog = parts["progress"]
        step, start_epoch, position, history = prog["step"], prog["epoch"], prog["position"], prog["history"]
        ckpt.set_rng_state(parts["rng"])

    log = _Log(output, accelerator.is_main_process, step)
    show = accelerator.is_main_process and (sys.stderr.isatty() if progress is None else progress)
    bar = _progress(show, total_steps, step)

    def save_checkpoint(epoch: int, pos: int) -> None:
        if ckpt_root is None:
            return
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            ckpt.write_checkpoint(
                ckpt_root,
                step,
                {
                    "student": accelerator.unwrap_model(model).state_dict(),
                    "objective": objective.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "progress": {"step": step, "epoch": epoch, "position": pos, "history": history},
                    "rng": ckpt.rng_state(),
                    **({"teacher": teacher.state_dict()} if stateful_teacher else {}),
                },
            )
        accelerator.wait_for_everyone()

    train_time, samples_seen = 0.0, 0
    for epoch in range(start_epoch, epochs):
        if step >= total_steps:
            break
        skip = position if epoch == start_epoch else 0
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        # Accelerate's loaders re-seed their sampler from their own iteration counter on __iter__;
        # set it to the real epoch so a resumed run sees the same order.
        if hasattr(epoch_loader, "set_epoch"):
            epoch_loader.set_epoch(epoch)
        elif sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        micro_iter = iter(epoch_loader)
        pos = skip
        loss_sum, correct, labelled, n_steps = 0.0, 0, 0, 0
        t0 = time.perf_counter()
        while step < total_steps:
            window = [as_batch(b) for _, b in zip(range(grad_accum), micro_iter)]
            if not window:
                break
            window = [objective.prepare(b, generator=torch.Generator().manual_seed(seed * 1_000_003 + step)) for b in window]
            units = torch.tensor([count_units(b) for b in window], dtype=torch.float64, device=device)
            total_units = accelerator.reduce(units.sum(), reduction="sum") if accelerator.num_processes > 1 else units.sum()
            step_loss = 0.0
            for i, batch in enumerate(window):
                last = i == len(window) - 1
                sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
                with sync, accelerator.autocast():
                    teacher_out = teacher_forward(batch)
                    student_out = student_forward(batch)
                    _check_labels(batch, student_out, teacher_out, objective)
                    loss = objective(student_out, teacher_out, batch)
                weight = float(units[i] * accelerator.num_processes / total_units)
                accelerator.backward(loss * weight)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TransfuseError(
                        f"the loss became {value} at step {step + 1} (epoch {epoch + 1}); lower the learning rate "
                        "(optim.lr), set optim.grad_clip, or check the inputs for NaN/inf"
                    )
                step_loss += value * float(units[i]) / float(units.sum())
                if batch.labels is not None and student_out.logits is not None and batch.labels.dim() == 1:
                    known = batch.labels >= 0
                    correct += int((student_out.logits.argmax(-1)[known] == batch.labels[known]).sum())
                    labelled += int(known.sum())
                samples_seen += batch.size
            if extra_params and accelerator.num_processes > 1:
                for p in extra_params:
                    if p.grad is not None:
                        p.grad = accelerator.reduce(p.grad, reduction="mean")
            if grad_clip is not None:
                accelerator.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            pos += len(window)
            n_steps += 1
            loss_sum += step_loss
            objective.on_step_end(step=step, total_steps=total_steps, loss=step_loss)
            if hasattr(teacher, "on_step_end"):
                teacher.on_step_end(unwrapped)
            if bar is not None:
                bar.update(step, loss_sum / n_steps, correct / max(labelled, 1) if labelled else None, epoch + 1)
            if step % log_every == 0:
                log.write({"step": step, "epoch": epoch + 1, "loss": step_loss, "lr": sched.get_last_lr()[0]})
            if checkpoint_every and step % checkpoint_every == 0 and step < total_steps:
                save_checkpoint(epoch, pos)
        train_time += time.perf_counter() - t0
        objective.on_epoch_end(epoch=epoch + 1, epochs=epochs)
        if hasattr(teacher, "on_epoch_end"):
            teacher.on_epoch_end(unwrapped, epoch + 1)
        record: Dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": loss_sum / max(n_steps, 1),
        }
        if labelled:
            record["train_accuracy"] = correct / labelled
        if evaluate is not None and accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            unwrapped.eval()
            record.update(evaluate(unwrapped))
            unwrapped.train()
        history.append(record)
        log.write(record)
        if ckpt_root is not None and (step < total_steps or checkpoint_every == 0):
            save_checkpoint(epoch + 1, 0)
    if bar is not None:
        bar.close()
    log.close()
    accelerator.wait_for_everyone()
    final = accelerator.unwrap_model(model)
    final.eval()
    return TrainResult(
        student=final,
        history=history,
        steps=step,
        samples_per_second=samples_seen * accelerator.num_processes / train_time if train_time else 0.0,
        train_seconds=train_time,
    )


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


def _check_labels(batch: Batch, student: Outputs, teacher: Optional[Outputs], objective: Objective) -> None:
    """Labels must index the classes; teacher and student must agree on the class count."""
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
    if batch.labels is not None and batch.labels.numel() and int(batch.labels.max()) >= classes:
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
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, epoch="-", loss="-", acc="-")
        self.progress.start()

    def update(self, step: int, loss: float, acc: Optional[float], epoch: int) -> None:
        self.progress.update(
            self.task, completed=step, loss=f"{loss:.4f}", acc="-" if acc is None else f"{acc:.3f}", epoch=epoch
        )

    def close(self) -> None:
        self.progress.stop()


def _progress(show: bool, total: int, start: int) -> Optional[_Bar]:
    return _Bar(total, start) if show else None
