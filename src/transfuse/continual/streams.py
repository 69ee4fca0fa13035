"""Task streams built from data-registry entries: split by classes, permuted, rotated, noisy, or the user's list.

A scenario (van de Ven & Tolias 2019, "Three scenarios for continual learning") says what a task is and
whether its id is known at test time:
- ``class``: tasks are disjoint groups of classes, one output head over every class, no task id;
- ``task``: the same groups, with the task id given, so predictions are restricted to the task's classes;
- ``domain``: every task has all classes under a different input transform (``permuted`` pixels,
  ``rotated`` images, or ``noisy``: Gaussian noise of std 0.25 t), no task id;
- ``datasets``: each task is its own data-registry entry (the user's list); labels are offset so the
  tasks' classes stay distinct, and ``task_ids`` says whether ids are given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import DataSplits, IndexedTensors, build_data
from ..errors import TransfuseError

Scenario = Literal["class", "task", "domain", "datasets"]


@dataclass
class Task:
    """One task of a stream: its training and test data and the classes it uses.

    classes: (C_t,) the global class ids of this task; task_id: its position in the stream.
    """

    task_id: int
    name: str
    train: IndexedTensors
    test: IndexedTensors
    classes: Tensor


@dataclass
class Stream:
    """A sequence of tasks sharing one label space of ``num_classes`` and one input shape."""

    scenario: str
    tasks: List[Task]
    num_classes: int
    in_shape: tuple
    task_ids_known: bool
    class_names: Optional[List[str]] = None
    description: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)


def _by_classes(split: IndexedTensors, classes: Tensor) -> IndexedTensors:
    keep = torch.isin(split.labels, classes)
    return split.subset(torch.nonzero(keep).flatten())


def _limit(split: IndexedTensors, n: Optional[int], generator: torch.Generator) -> IndexedTensors:
    if n is None or n >= len(split):
        return split
    return split.subset(torch.randperm(len(split), generator=generator)[:n].sort().values)


def _rotate(x: Tensor, degrees: float) -> Tensor:
    """Images (N, C, H, W) rotated by ``degrees`` about their centre (bilinear, zero outside)."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=torch.float32)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)  # (N, H, W, 2)
    return F.grid_sample(x.float(), grid, align_corners=False)


def _transformed(split: IndexedTensors, transform: str, t: int, tasks: int, seed: int) -> IndexedTensors:
    x = split.inputs
    if transform == "permuted":
        # task 0 keeps the original pixels; task t's permutation comes from (seed, t), the same for train and test
        flat = x.flatten(1)  # (N, D)
        perm = torch.arange(flat.shape[1])
        if t > 0:
            perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(int(seed) * 1009 + t))
        x = flat[:, perm].reshape(x.shape)
    elif transform == "noisy":
        # corruption severity grows with t (CIFAR-10-C's Gaussian-noise style): std 0.25 t in input units, task 0 clean;
        # the draw depends on (seed, t, split size), so train and test get different noise
        g = torch.Generator().manual_seed(int(seed) * 1009 + 7919 * t + len(x))
        x = x.float() + 0.25 * t * torch.randn(x.shape, generator=g)
    else:
        if x.ndim != 4:
            raise TransfuseError(f"a rotated stream needs images (N, C, H, W); this data set has inputs of shape {tuple(x.shape)}")
        x = _rotate(x, 180.0 * t / tasks)
    return IndexedTensors(x, split.labels, split.index)


def build_stream(
    *,
    scenario: Scenario = "class",
    dataset: str = "fashion_mnist",
    params: Optional[Dict[str, Any]] = None,
    tasks: int = 5,
    classes_per_task: Optional[int] = None,
    class_order: Optional[Sequence[int]] = None,
    transform: Literal["permuted", "rotated", "noisy"] = "permuted",
    datasets: Optional[Sequence[Dict[str, Any]]] = None,
    task_ids: bool = False,
    train_per_task: Optional[int] = None,
    test_per_task: Optional[int] = None,
    seed: int = 0,
) -> Stream:
    """A stream of ``tasks`` tasks from data-registry entries (see the module docstring for scenarios).

    class_order: the order classes are split in (default 0..C-1); train/test_per_task: random subsets of
    each task's samples (small runs); datasets: for scenario ``datasets``, a list of {name, params}.
    """
    gen = torch.Generator().manual_seed(int(seed))
    if scenario not in ("class", "task", "domain", "datasets"):
        raise TransfuseError(f"unknown scenario {scenario!r}; use class, task, domain or datasets")
    if scenario == "datasets":
        return _user_stream(datasets, task_ids, train_per_task, test_per_task, gen)
    if tasks < 1:
        raise TransfuseError(f"a stream needs at least one task; got tasks={tasks}")
    data: DataSplits = build_data(dataset, params or {})
    if data.test is None:
        raise TransfuseError(f"data set {dataset!r} has no test split; a stream evaluates every task on held-out data")
    C = data.num_classes
    out: List[Task] = []
    if scenario in ("class", "task"):
        per = classes_per_task or C // tasks
        order = torch.as_tensor(list(class_order) if class_order is not None else range(C), dtype=torch.long)
        if sorted(order.tolist()) != sorted(set(order.tolist())) or order.min() < 0 or order.max() >= C:
            raise TransfuseError(f"class_order must list distinct class ids in 0..{C - 1}; got {order.tolist()}")
        if per < 1 or per * tasks > len(order):
            raise TransfuseError(
                f"{tasks} tasks x {per} classes need {tasks * per} classes but {dataset!r} has {len(order)}; "
                "lower tasks or classes_per_task"
            )
        for t in range(tasks):
            classes = order[t * per : (t + 1) * per]
            train = _limit(_by_classes(data.train, classes), train_per_task, gen)
            test = _limit(_by_classes(data.test, classes), test_per_task, gen)
            out.append(Task(t, f"classes {classes.tolist()}", train, test, classes))
        known = scenario == "task"
    else:
        for t in range(tasks):
            train = _transformed(_limit(data.train, train_per_task, gen), transform, t, tasks, seed)
            test = _transformed(_limit(data.test, test_per_task, gen), transform, t, tasks, seed)
            out.append(Task(t, f"{transform} {t}", train, test, torch.arange(C)))
        known = False
    desc = {"scenario": scenario, "dataset": dataset, "params": params or {}, "tasks": tasks, "seed": seed,
            "transform": transform if scenario == "domain" else None,
            "train_per_task": train_per_task, "test_per_task": test_per_task}
    return Stream(scenario, out, C, tuple(data.in_shape), known, data.class_names, desc)


def _user_stream(datasets, task_ids, train_per_task, test_per_task, gen) -> Stream:
    if not datasets:
        raise TransfuseError("scenario datasets needs a list of data sets: datasets=[{name: ..., params: {...}}, ...]")
    out: List[Task] = []
    offset = 0
    in_shape = None
    names: List[str] = []
    for t, spec in enumerate(datasets):
        if not isinstance(spec, dict) or "name" not in spec:
            raise TransfuseError(f"datasets[{t}] must be a mapping with a name (and optional params); got {spec!r}")
        data = build_data(spec["name"], spec.get("params") or {})
        if data.test is None:
            raise TransfuseError(f"data set {spec['name']!r} (task {t}) has no test split; give it one (test_fraction or x_test)")
        if in_shape is not None and tuple(data.in_shape) != in_shape:
            raise TransfuseError(
                f"task {t} ({spec['name']!r}) has inputs {tuple(data.in_shape)} but task 0 has {in_shape}; "
                "every data set of a stream needs the same input shape"
            )
        in_shape = tuple(data.in_shape)
        shift = lambda s: IndexedTensors(s.inputs, torch.where(s.labels >= 0, s.labels + offset, s.labels), s.index)
        train = _limit(shift(data.train), train_per_task, gen)
        test = _limit(shift(data.test), test_per_task, gen)
        out.append(Task(t, spec["name"], train, test, torch.arange(offset, offset + data.num_classes)))
        names += [f"{spec['name']}:{c}" for c in (data.class_names or range(data.num_classes))]
        offset += data.num_classes
    desc = {"scenario": "datasets", "datasets": list(datasets), "task_ids": task_ids}
    return Stream("datasets", out, offset, in_shape, bool(task_ids), names, desc)
