"""Several trainable students in one loop, on the distillation loop's named steps.

Each optimizer step: every student runs forward on the micro-batch (``Learner.forward``), student
i's objective reads its own outputs and its peers' (stacked, detached when the method says so),
the students' losses are summed and backpropagated once (with detached peers each loss reaches
only its own student, so this is each student's own gradient), then every optimizer steps
(``Learner.optimizer_step``). ``shared_optimizer=True`` puts all students in one module and one
optimizer instead. Micro-batches are weighted by their share of the window's samples across
processes, as in :func:`transfuse.distill.loop.train`, so it runs unchanged under
``accelerate launch``. Checkpoints hold every learner's parts (``s<i>.student``, ...) with the
progress and RNG, so a resumed run ends on the weights of an uninterrupted one. The students'
objectives see the batch as the data gives it (``Objective.prepare`` is not called: an input
change would have to be shared by all students, which no online method here needs).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..distill import checkpoint as ckpt
from ..distill.loop import (
    Learner,
    Progress,
    _check_labels,
    _Log,
    default_forward,
    epoch_batches,
    make_accelerator,
    next_window,
    plan_steps,
    prepare_loader,
)
from ..errors import TransfuseError
from ..objectives import Objective
from ..signals import Batch, Outputs
from .methods import OnlineMethod, build_method


@dataclass
class OnlineResult:
    students: List[nn.Module]
    history: List[Dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0
    metrics: Dict[str, Any] = field(default_factory=dict)  # the last ``evaluate`` result


def peers_of(outs: Sequence[Outputs], i: int, *, detach: bool) -> Outputs:
    """The other students' logits stacked in student order: (P, B, C) with P = len(outs) - 1."""
    others = [o.logits for j, o in enumerate(outs) if j != i]
    shapes = {tuple(t.shape) for t in others} | {tuple(outs[i].logits.shape)}
    if len(shapes) != 1:
        raise TransfuseError(
            f"the students give outputs of different shapes {sorted(shapes)}; give every student the same number of classes"
        )
    stacked = torch.stack(others)  # (P, B, C)
    return Outputs(logits=stacked.detach() if detach else stacked)


class JointStudents(nn.Module):
    """All students as one module (one optimizer over all): forward gives each one's logits in ``hidden``."""

    def __init__(self, students: Sequence[nn.Module]) -> None:
        super().__init__()
        self.students = nn.ModuleList(students)

    def forward(self, batch: Batch) -> Outputs:
        outs = [default_forward(s, batch).logits for s in self.students]  # K x (B, C)
        return Outputs(logits=outs[0], hidden={f"s{i}": o for i, o in enumerate(outs)})


class JointObjectives(Objective):
    """The students' objectives held together (moved, checkpointed and bound as one)."""

    def __init__(self, objectives: Sequence[Objective]) -> None:
        super().__init__()
        self.each = nn.ModuleList(objectives)
        self.needs_teacher = False

    def bind(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        for objective, model in zip(self.each, student.students):
            objective.bind(model)

    def on_step_end(self, *, step: int, total_steps: int, loss: float) -> None:
        for objective in self.each:
            objective.on_step_end(step=step, total_steps=total_steps, loss=loss)

    def on_epoch_end(self, *, epoch: int, epochs: int) -> None:
        for objective in self.each:
            objective.on_epoch_end(epoch=epoch, epochs=epochs)


class StudentGroup:
    """The students, their objectives and learners (one per student, or one over all), as named steps."""

    def __init__(self, accelerator, students: Sequence[nn.Module], objectives: Sequence[Objective], *, detach: bool,
                 shared_optimizer: bool, total_steps: int, optim: Sequence[Dict[str, Any]], seed: int) -> None:
        self.accelerator, self.detach, self.shared = accelerator, detach, shared_optimizer
        self.objectives = list(objectives)
        if shared_optimizer:
            joint = JointObjectives(objectives)
            self.learners = [Learner(accelerator, student=JointStudents(students), teacher=None, objective=joint,
                                     total_steps=total_steps, seed=seed, forward=lambda model, batch: model(batch), **optim[0])]
            self.students = list(self.learners[0].student.students)
        else:
            self.learners = [Learner(accelerator, student=s, teacher=None, objective=o, total_steps=total_steps, seed=seed, **opts)
                             for s, o, opts in zip(students, objectives, optim)]
            self.students = [learner.student for learner in self.learners]

    # -- the steps -------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> List[Outputs]:
        """Every student's outputs for the micro-batch (through its DDP wrapper when there is one)."""
        if self.shared:
            out = self.learners[0].forward(batch)
            return [Outputs(logits=out.hidden[f"s{i}"]) for i in range(len(self.students))]
        return [learner.forward(batch) for learner in self.learners]

    def losses(self, outs: List[Outputs], batch: Batch) -> List[Tensor]:
        """Student i's objective on its outputs and its peers' (its "teacher"), after the label checks."""
        losses = []
        for i, objective in enumerate(self.objectives):
            peers = peers_of(outs, i, detach=self.detach)
            _check_labels(batch, outs[i], None, objective)
            losses.append(objective(outs[i], peers, batch))
        return losses

    def no_sync(self, last: bool):
        stack = contextlib.ExitStack()
        for learner in self.learners:
            stack.enter_context(learner.no_sync(last))
        return stack

    def train_step(self, window: List[Batch], *, step: int, epoch: int) -> List[float]:
        """One optimizer step of every student over an accumulation window; each student's mean loss."""
        accelerator = self.accelerator
        units = [b.size for b in window]
        local_units = sum(units)
        total_units = float(local_units)
        if accelerator.num_processes > 1:
            local = torch.tensor(float(local_units), dtype=torch.float64, device=accelerator.device)
            total_units = float(accelerator.reduce(local, reduction="sum"))
        sums = [0.0] * len(self.students)
        for i, batch in enumerate(window):
            with self.no_sync(i == len(window) - 1), accelerator.autocast():
                losses = self.losses(self.forward(batch), batch)
            self.learners[0].backward(sum(losses), units[i] * accelerator.num_processes / total_units)
            for k, loss in enumerate(losses):
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TransfuseError(
                        f"student {k}'s loss became {value} at step {step + 1} (epoch {epoch + 1}); lower the learning "
                        "rate (optim.lr) or set optim.grad_clip"
                    )
                sums[k] += value * units[i] / local_units
        for learner in self.learners:
            learner.optimizer_step()
        return sums

    def end_step(self, *, step: int, loss: float) -> None:
        for learner in self.learners:
            learner.end_step(step=step, loss=loss)

    def end_epoch(self, *, epoch: int, epochs: int) -> None:
        for learner in self.learners:
            learner.end_epoch(epoch=epoch, epochs=epochs)

    def evaluate(self, fn: Callable[[List[nn.Module]], Dict[str, Any]]) -> Dict[str, Any]:
        for s in self.students:
            s.eval()
        try:
            return fn(self.students)
        finally:
            for s in self.students:
                s.train()

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoint_parts(self) -> Dict[str, Any]:
        return {f"s{i}.{name}": part for i, learner in enumerate(self.learners) for name, part in learner.checkpoint_parts().items()}

    def part_names(self) -> tuple:
        return tuple(f"s{i}.{name}" for i, learner in enumerate(self.learners) for name in learner.part_names())

    def load_checkpoint_parts(self, parts: Dict[str, Any]) -> None:
        for i, learner in enumerate(self.learners):
            learner.load_checkpoint_parts({name: parts[f"s{i}.{name}"] for name in learner.part_names()})


def save_group_checkpoint(accelerator, root: Optional[Path], group: StudentGroup, progress: Progress, *, epoch: int, position: int) -> None:
    """An atomic checkpoint of every student's learner and the run's progress and RNG (main process writes)."""
    if root is None:
        return
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run = {"step": progress.step, "epoch": epoch, "position": position, "history": progress.history,
               "epoch_sums": progress.epoch_sums if position else []}
        ckpt.write_checkpoint(root, progress.step, {**group.checkpoint_parts(), "progress": run, "rng": ckpt.rng_state()})
    accelerator.wait_for_everyone()


def load_group_checkpoint(root: Path, group: StudentGroup) -> Progress:
    folder = ckpt.latest_checkpoint(root)
    if folder is None:
        raise TransfuseError(f"no checkpoint to resume from in {str(root)!r}; run without --resume")
    parts = ckpt.read_checkpoint(folder, group.part_names() + ("progress", "rng"))
    group.load_checkpoint_parts(parts)
    ckpt.set_rng_state(parts["rng"])
    prog = parts["progress"]
    return Progress(step=prog["step"], epoch=prog["epoch"], position=prog["position"], history=prog["history"],
                    epoch_sums=list(prog.get("epoch_sums") or []))


def _per_student(value: Any, n: int, what: str) -> List[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise TransfuseError(f"{what} lists {len(value)} values for {n} students; give one per student or a single value")
        return list(value)
    return [value] * n


def train_students(
    students: Sequence[nn.Module],
    method: OnlineMethod | str,
    train_loader: DataLoader,
    *,
    method_params: Optional[Dict[str, Any]] = None,
    epochs: int = 1,
    max_steps: Optional[int] = None,
    optimizer: str = "adamw",
    lr: float | Sequence[float] = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    schedule: str = "constant",
    warmup_steps: int = 0,
    grad_accum: int = 1,
    grad_clip: Optional[float] = None,
    shared_optimizer: bool = False,
    mixed_precision: str = "no",
    seed: int = 0,
    output_dir: Optional[str | Path] = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    evaluate: Optional[Callable[[List[nn.Module]], Dict[str, Any]]] = None,
    log_every: int = 50,
    cpu: bool = False,
) -> OnlineResult:
    """Train ``students`` together with a joint online method (``dml``, ``bdkd`` or an OnlineMethod).

    lr: one value, or one per student (per-student optimizers only). shared_optimizer: one optimizer
    over all students instead of one each. checkpoint_every: steps between checkpoints (0: at each
    epoch end; needs output_dir); resume: continue from output_dir/checkpoints/latest.
    evaluate: called with the list of students (eval mode) after each epoch; its dict joins the history.
    """
    method = build_method(method, method_params) if isinstance(method, str) else method
    students = list(students)
    method.check(len(students))
    if method.kind != "joint":
        name = getattr(method, "registry_name", type(method).__name__)
        raise TransfuseError(f"online method {name!r} runs its own stages ({method.kind}), not one joint loop; call its run()")
    if shared_optimizer and isinstance(lr, (list, tuple)):
        raise TransfuseError("one learning rate per student needs one optimizer per student; set shared_optimizer=false or give one lr")
    plan = plan_steps(train_loader, epochs=epochs, max_steps=max_steps, grad_accum=grad_accum)
    ckpt_root = Path(output_dir) / "checkpoints" if output_dir is not None else None
    if resume and ckpt_root is None:
        raise TransfuseError("resume needs an output folder holding checkpoints")
    n = len(students)
    lrs = _per_student(lr, n, "lr")
    optim = [dict(optimizer=optimizer, lr=float(lrs[i]), weight_decay=weight_decay, momentum=momentum, schedule=schedule,
                  warmup_steps=warmup_steps, grad_clip=grad_clip) for i in range(n)]
    torch.manual_seed(seed)
    accelerator = make_accelerator(mixed_precision=mixed_precision, cpu=cpu)
    group = StudentGroup(accelerator, students, method.objectives(n), detach=method.detach_peers,
                         shared_optimizer=shared_optimizer, total_steps=plan.total_steps, optim=optim, seed=seed)
    loader = prepare_loader(accelerator, train_loader)
    state = load_group_checkpoint(ckpt_root, group) if resume else Progress(epoch_sums=[])
    log = _Log(Path(output_dir) if output_dir is not None else None, accelerator.is_main_process, state.step)
    train_time, last_eval = 0.0, {}
    for epoch in range(state.epoch, plan.epochs):
        if state.step >= plan.total_steps:
            break
        skip = state.position if epoch == state.epoch else 0
        micro = epoch_batches(accelerator, loader, epoch, skip=skip, sampler=getattr(train_loader, "sampler", None))
        pos = skip
        sums = list(state.epoch_sums) if skip and state.epoch_sums else [0.0] * (n + 1)  # n loss sums, steps
        t0 = time.perf_counter()
        while state.step < plan.total_steps:
            window = next_window(micro, grad_accum)
            if not window:
                break
            losses = group.train_step(window, step=state.step, epoch=epoch)
            state.step += 1
            pos += len(window)
            sums = [a + b for a, b in zip(sums, losses + [1])]
            group.end_step(step=state.step, loss=sum(losses))
            state.epoch_sums = sums
            if state.step % log_every == 0:
                log.write({"step": state.step, "epoch": epoch + 1, **{f"loss_s{i}": v for i, v in enumerate(losses)}})
            if checkpoint_every and state.step % checkpoint_every == 0 and state.step < plan.total_steps:
                save_group_checkpoint(accelerator, ckpt_root, group, state, epoch=epoch, position=pos)
        train_time += time.perf_counter() - t0
        group.end_epoch(epoch=epoch + 1, epochs=plan.epochs)
        record: Dict[str, Any] = {"epoch": epoch + 1, "step": state.step}
        record.update({f"train_loss_s{i}": sums[i] / max(sums[n], 1) for i in range(n)})
        if evaluate is not None and accelerator.is_main_process:
            last_eval = group.evaluate(evaluate)
            record.update(last_eval)
        state.history.append(record)
        log.write(record)
        if ckpt_root is not None and (state.step < plan.total_steps or checkpoint_every == 0):
            save_group_checkpoint(accelerator, ckpt_root, group, state, epoch=epoch + 1, position=0)
    log.close()
    accelerator.wait_for_everyone()
    for s in group.students:
        s.eval()
    return OnlineResult(students=group.students, history=state.history, steps=state.step, train_seconds=train_time,
                        metrics=dict(last_eval))
