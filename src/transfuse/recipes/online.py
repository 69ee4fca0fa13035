"""``transfuse distill RECIPE.yaml`` with ``students:``: several students trained together (online distillation).

A recipe with ``students:`` (two or more models from the model registry) and ``method:`` (an
online method, ``transfuse list online-methods``) instead of ``student:`` / ``teacher:`` /
``objective:``; the data, optim, train and eval sections are distill's. Joint methods (dml, bdkd)
train all students in one loop (``online.loop.train_students``); staged ones (takd) run their
chain of offline stages. Writes ``student<i>.safetensors`` for each student, ``run_config.json``
and a report with each student's accuracy / ECE / NLL and the ensemble of the students (mean of
their probabilities). Every check on the input runs before anything is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from pydantic import AliasChoices, Field
from torch import nn

from ..config import Strict, load_config
from ..errors import TransfuseError
from ._checks import check_output_folder, probe
from .distill import DataSpec, EvalSpec, ModelSpec, OptimSpec, TrainSpec, load_weights, save_student

FINISHED = "run_config.json"  # written last


class StudentSpec(ModelSpec):
    lr: Optional[float] = Field(None, gt=0)  # this student's learning rate (default optim.lr)


class MethodSpec(Strict):
    name: str = "dml"
    params: Dict[str, Any] = Field(default_factory=dict)


class OnlineConfig(Strict):
    task: str = "classify"
    students: List[StudentSpec]
    method: Union[MethodSpec, str] = Field(default_factory=MethodSpec)
    data: DataSpec
    optim: OptimSpec = Field(default_factory=OptimSpec)
    shared_optimizer: bool = False  # one optimizer over all students instead of one each
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    output: str = Field("runs/online", validation_alias=AliasChoices("output", "output_dir"))
    overwrite: bool = False

    def method_spec(self) -> MethodSpec:
        return MethodSpec(name=self.method) if isinstance(self.method, str) else self.method


def check_recipe(cfg: OnlineConfig):
    """The method, the student count and the task, before any data or model is built."""
    from ..online import build_method

    if cfg.task != "classify":
        raise TransfuseError(
            f"`students:` recipes train classifiers (task: classify); got task {cfg.task!r}. "
            "causal-LM students (method: comd) take task: lm"
        )
    spec = cfg.method_spec()
    method = build_method(spec.name, spec.params)
    if method.kind == "rounds":
        raise TransfuseError(
            f"online method {spec.name!r} trains causal LMs in rounds and is not a classifier recipe; "
            "set task: lm and list LM students (see the online_comd recipe)"
        )
    method.check(len(cfg.students))
    if cfg.shared_optimizer and any(s.lr is not None for s in cfg.students):
        raise TransfuseError("students[].lr needs one optimizer per student; remove the per-student lr or set shared_optimizer=false")
    if cfg.shared_optimizer and method.kind != "joint":
        raise TransfuseError(f"shared_optimizer=true needs a joint method (dml, bdkd); {spec.name!r} trains its models in stages")
    if cfg.data.held_out:
        raise TransfuseError("data.held_out is for objectives that train on a held-out split; online methods do not use it")
    return method


def build_students(cfg: OnlineConfig, data) -> List[nn.Module]:
    from ..models import build_model

    students = []
    for i, spec in enumerate(cfg.students):
        model = build_model(spec.name, spec.params, in_shape=data.in_shape, num_classes=data.num_classes)
        if spec.weights:
            load_weights(model, spec.weights, what=f"students[{i}]")
        probe(model, data, what=f"students[{i}]", name=spec.name)
        students.append(model)
    return students


def measure(students: List[nn.Module], test, *, batch_size: int, bins: int, latency: bool = False) -> List[Dict[str, Any]]:
    """Each student's accuracy / ECE / NLL on ``test`` and, for several, their ensemble's (mean of their probabilities)."""
    from ..eval import evaluate_model
    from ..eval.metrics import accuracy, expected_calibration_error

    rows, probs = [], []
    for i, model in enumerate(students):
        m = evaluate_model(model, test, batch_size=batch_size, bins=bins, latency=latency)
        probs.append(m["probs"])
        rows.append({"run": f"student{i}", "accuracy": m["accuracy"], "ece": m["ece"], "nll": m["nll"],
                     "parameters": m["parameters"], "probs": m["probs"], "labels": m["labels"],
                     **({"latency_ms_per_1000": m["latency_ms_per_1000"]} if latency else {})})
    if len(students) == 1:
        return rows
    mean = torch.stack(probs).mean(0)  # (N, C)
    labels = rows[0]["labels"]
    known = labels >= 0
    nll = float(F.nll_loss(mean[known].clamp_min(1e-12).log(), labels[known])) if bool(known.any()) else float("nan")
    rows.append({"run": "ensemble", "accuracy": accuracy(mean, labels), "ece": expected_calibration_error(mean, labels, bins),
                 "nll": nll, "parameters": sum(r["parameters"] for r in rows), "probs": mean, "labels": labels})
    return rows


def run(cfg: OnlineConfig, *, resume: bool = False) -> Dict[str, Any]:
    """Run a validated ``students:`` config; returns each student's and the ensemble's metrics."""
    from ..data import build_data
    from ..distill.loop import make_loader
    from ..eval import write_report
    from ..seeding import seed_everything

    method = check_recipe(cfg)
    out = check_output_folder(Path(cfg.output), finished=FINISHED, resume=resume, overwrite=cfg.overwrite)
    seed_everything(cfg.train.seed)
    data = build_data(cfg.data.name, cfg.data.params)
    students = build_students(cfg, data)
    loader = make_loader(data.train, batch_size=cfg.data.batch_size, seed=cfg.train.seed)

    def per_epoch(models: List[nn.Module]) -> Dict[str, Any]:
        if data.test is None or not cfg.eval.each_epoch:
            return {}
        rows = measure(models, data.test, batch_size=cfg.data.eval_batch_size, bins=cfg.eval.bins)
        return {f"test_accuracy_{r['run']}": r["accuracy"] for r in rows}

    o, t = cfg.optim, cfg.train
    loop = dict(epochs=t.epochs, max_steps=t.max_steps, optimizer=o.name, weight_decay=o.weight_decay, momentum=o.momentum,
                schedule=o.schedule, warmup_steps=o.warmup_steps, grad_accum=t.grad_accum, grad_clip=o.grad_clip,
                mixed_precision=t.mixed_precision, seed=t.seed, checkpoint_every=t.checkpoint_every, log_every=t.log_every)
    lrs = [s.lr if s.lr is not None else o.lr for s in cfg.students]
    if method.kind == "joint":
        from ..online.loop import train_students

        result = train_students(students, method, loader, lr=lrs if not cfg.shared_optimizer else o.lr,
                                shared_optimizer=cfg.shared_optimizer, output_dir=out, resume=resume, evaluate=per_epoch, **loop)
        trained, curves = result.students, {"students": result.history}
    else:
        trained, curves = method.run(students, loader, lrs=lrs, output_dir=out, resume=resume, evaluate=per_epoch,
                                     teacher_has_weights=cfg.students[0].weights is not None, **loop)
    metrics: Dict[str, Any] = {}
    reliability: Dict[str, Any] = {}
    rows: List[Dict[str, Any]] = []
    if data.test is not None:
        for row in measure(trained, data.test, batch_size=cfg.data.eval_batch_size, bins=cfg.eval.bins, latency=cfg.eval.latency):
            reliability[row["run"]] = (row.pop("probs"), row.pop("labels"))
            rows.append(row)
            metrics[row["run"]] = {k: v for k, v in row.items() if k != "run"}
    for i, model in enumerate(trained):
        save_student(model, out / f"student{i}", cfg.students[i].model_dump())  # student<i>/student.safetensors
    write_report(out / "report", rows=[{**r, "model": _model_name(cfg, r["run"])} for r in rows], curves=curves,
                 reliability=reliability, title=f"transfuse online: {cfg.method_spec().name}", bins=cfg.eval.bins)
    write_finished(out, cfg)
    return metrics


def _model_name(cfg: OnlineConfig, run: str) -> str:
    if run == "ensemble":
        return "mean of " + ", ".join(s.name for s in cfg.students)
    return cfg.students[int(run[len("student"):])].name


def write_finished(out: Path, cfg: Any) -> None:
    """The recipe as run, as ``out/run_config.json``: written last and atomically, it marks the run finished."""
    import json

    from .._atomic import write_text

    write_text(out / FINISHED, json.dumps(cfg.model_dump(), indent=2))


def main(path: Path, overrides: List[str], *, resume: bool = False) -> Dict[str, Any]:
    from .._console import console

    cfg = load_config(OnlineConfig, path, overrides)
    metrics = run(cfg, resume=resume)
    shown = {run: {k: round(v, 4) for k, v in m.items() if k in ("accuracy", "ece")} for run, m in metrics.items()}
    console().print(f"[bold]done[/bold]: {cfg.output}/student<i>/student.safetensors  {shown}")
    return metrics
