"""`transfuse distill RECIPE.yaml [key=value ...]`: any distillation a YAML recipe describes.

config -> data -> student, teacher source, objective -> loop -> evaluation -> saved student + report.
Every check on the user's input runs before anything is written.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import torch
from pydantic import AliasChoices, Field
from torch import nn

from .. import _atomic
from ..config import Strict, load_config
from ..errors import TransfuseError
from ._checks import check_output_folder, check_teacher_classes, probe

CONFIGS = Path(__file__).parent / "configs"


class ModelSpec(Strict):
    name: str
    params: Dict[str, Any] = Field(default_factory=dict)
    weights: Optional[str] = None  # a .safetensors file, or "builtin:<asset>" for weights shipped with transfuse


class TeacherSpec(ModelSpec):
    name: Optional[str] = None  # a model name; not used with source: self
    source: Literal["model", "self"] = "model"  # self: the student's own past (snapshot or EMA)
    every_epochs: int = Field(1, gt=0)  # source self: refresh the snapshot after every this many epochs
    ema_decay: Optional[float] = Field(None, gt=0, lt=1)  # source self: an EMA of the student instead
    cache: bool = True  # run the teacher once over the training data and reuse its logits
    cache_dir: str = "~/.cache/transfuse/teachers"
    cache_path: Optional[str] = None
    # several teachers as one source: each member a teacher spec (its own cache flag), fused by `rule`
    # (then `weights` is one fusion weight per member, not a weights file)
    ensemble: Optional[List["TeacherSpec"]] = None
    rule: Union[str, Dict[str, Any]] = "mean"  # a fusion-rule name or {name: ..., params}; with ensemble
    weights: Union[str, List[float], None] = None


TeacherSpec.model_rebuild()


class ObjectiveSpec(Strict):
    name: str = "kd"
    params: Dict[str, Any] = Field(default_factory=dict)


class DataSpec(Strict):
    name: str
    params: Dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(1000, gt=0)
    held_out: int = Field(0, ge=0)  # labelled training samples kept out of training for objectives that use them (tgeo)


class OptimSpec(Strict):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)
    schedule: Literal["constant", "cosine", "linear", "onecycle"] = "onecycle"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: Optional[float] = Field(None, gt=0)


class TrainSpec(Strict):
    epochs: int = Field(10, gt=0)
    max_steps: Optional[int] = Field(None, gt=0)
    grad_accum: int = Field(1, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0)  # steps; 0 = at each epoch end
    log_every: int = Field(50, gt=0)
    progress: Optional[bool] = None  # None: a bar when stderr is a terminal
    stall_steps: int = Field(100, ge=0)  # warn when the loss has not moved / gradients ~0 after this many steps; 0: off


class AdversarialSpec(Strict):
    """Robust accuracy of the final student on the test split (eval.adversarial.robust_accuracy)."""

    attack: Literal["pgd", "fgsm"] = "pgd"
    eps: float = Field(0.1, ge=0)  # a fraction of the input range (the training inputs' min..max): pixels 0.1 = 25.5/255
    steps: int = Field(10, gt=0)  # PGD-k; fgsm takes one step of size eps
    limit: Optional[int] = Field(1000, gt=0)  # attack the first this many test samples (None: all)
    seed: int = 0


class EvalSpec(Strict):
    latency: bool = True
    bins: int = Field(15, gt=1)
    each_epoch: bool = True
    adversarial: Optional[AdversarialSpec] = None  # e.g. {attack: pgd, eps: 0.1, steps: 10}
    compare_to: Optional[str] = None  # an earlier run's output folder: its student row and the delta join the report


class DistillConfig(Strict):
    task: Literal["classify"] = "classify"  # `task: lm` recipes go to transfuse.recipes.distill_lm
    student: ModelSpec
    teacher: Optional[TeacherSpec] = None
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    data: DataSpec
    optim: OptimSpec = Field(default_factory=OptimSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    output: str = Field("runs/distill", validation_alias=AliasChoices("output", "output_dir"))  # output_dir: same key
    overwrite: bool = False


def shipped_recipes() -> Dict[str, str]:
    """name -> first comment line of each recipe shipped in the package."""
    out = {}
    for path in sorted(CONFIGS.glob("*.yaml")):
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        out[path.stem] = first.lstrip("# ").strip()
    return out


def resolve_recipe(recipe: str | Path) -> Path:
    """A path, or the name of a shipped recipe ("kd" -> recipes/configs/kd.yaml)."""
    path = Path(recipe)
    if path.is_dir():
        raise TransfuseError(f"recipe {str(recipe)!r} is a folder; pass a YAML recipe file or a shipped recipe name (transfuse list recipes)")
    if path.exists():
        return path
    shipped = CONFIGS / f"{recipe}.yaml"
    if shipped.exists():
        return shipped
    from ..errors import closest

    raise TransfuseError(
        f"recipe {str(recipe)!r} is neither a file nor a shipped recipe.{closest(str(recipe), shipped_recipes())} "
        "Run `transfuse list recipes`."
    )


# ---------------------------------------------------------------------------------------------
# building the pieces


def load_weights(model: nn.Module, weights: str, *, what: str) -> nn.Module:
    """Load a .safetensors file (or a builtin asset) into ``model``, with clear errors."""
    from safetensors.torch import load_file

    if weights.startswith("builtin:"):
        from .builtin_teacher import ensure_builtin

        path = ensure_builtin(weights.split(":", 1)[1])
    else:
        path = Path(weights).expanduser()
        if not path.exists():
            raise TransfuseError(f"{what} weights {weights!r} do not exist; check the path")
        if path.suffix != ".safetensors":
            raise TransfuseError(f"{what} weights must be a .safetensors file (pickle files can run code); got {weights!r}")
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise TransfuseError(f"{what} weights {str(path)!r} are unreadable ({exc})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches, e.g. a head for another number of classes
        detail = next((l.strip() for l in str(exc).splitlines() if "size mismatch" in l), str(exc).splitlines()[0])
        raise TransfuseError(
            f"{what} weights {str(path)!r} do not fit the model ({detail}); "
            "check the model name, its params and the data's number of classes"
        ) from None
    if missing or unexpected:
        raise TransfuseError(
            f"{what} weights {str(path)!r} do not fit the model: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}; check the model name and params"
        )
    return model


@dataclass
class Pieces:
    data: Any
    student: nn.Module
    teacher_model: Optional[nn.Module]
    objective: Any


def build_pieces(cfg: DistillConfig) -> Pieces:
    """Data, student, teacher model and objective, each checked; nothing is written."""
    from ..data import build_data
    from ..data._text import teacher_view, tokenize_for
    from ..models import build_model
    from ..objectives import build_objective
    from ..seeding import seed_everything

    seed_everything(cfg.train.seed)  # data splits, initial weights and objective modules all follow the seed
    data = build_data(cfg.data.name, cfg.data.params)
    student = build_model(cfg.student.name, cfg.student.params, in_shape=data.in_shape, num_classes=data.num_classes)
    if cfg.student.weights:
        load_weights(student, cfg.student.weights, what="student")
    objective = build_objective(cfg.objective.name, cfg.objective.params)
    if hasattr(objective, "check_num_classes"):  # an objective that cannot work with this many classes (mixkd on 2)
        objective.check_num_classes(data.num_classes)
    teacher = None
    if cfg.teacher is not None and cfg.teacher.ensemble is not None:
        teacher = _ensemble_model(cfg.teacher, data)
    elif cfg.teacher is not None and cfg.teacher.source == "model":
        if isinstance(cfg.teacher.weights, list):
            raise TransfuseError("teacher.weights is a list of fusion weights, which only an ensemble takes; give a .safetensors file")
        if not cfg.teacher.name:
            raise TransfuseError("teacher needs a model name (teacher.name=...), or teacher.source=self")
        teacher = build_model(cfg.teacher.name, cfg.teacher.params, in_shape=data.in_shape, num_classes=data.num_classes)
        if cfg.teacher.weights:
            load_weights(teacher, cfg.teacher.weights, what="teacher")
        teacher.eval()
    elif cfg.teacher is None and objective.needs_teacher:
        raise TransfuseError(
            f"objective {cfg.objective.name!r} needs a teacher; add a `teacher:` section or use objective.name=ce"
        )
    _check_teacher_members(cfg, objective)
    data = tokenize_for(data, student, teacher)  # text: token ids from each model's own tokenizer
    if hasattr(objective, "set_input_range"):  # adversarial objectives: eps relative to the inputs' range
        from ..eval import input_range

        objective.set_input_range(input_range(data.train.inputs))
    probe(student, data, what="student", name=cfg.student.name)
    if teacher is not None:
        probe(teacher, data, what="teacher", name=cfg.teacher.name or "ensemble", inputs=teacher_view(data.train))
        _check_class_counts(teacher, student, data, fewer_ok=objective.teacher_may_have_fewer_classes)
    return Pieces(data=data, student=student, teacher_model=teacher, objective=objective)


def _check_teacher_members(cfg: DistillConfig, objective: Any) -> None:
    """Objectives that read several live teachers themselves (mtard, metadmoe) get them from teacher.ensemble."""
    fewest, most = getattr(objective, "teacher_members", (0, 0))
    if not fewest:
        return
    members = cfg.teacher.ensemble if cfg.teacher is not None and cfg.teacher.ensemble is not None else []
    count = f"exactly {fewest}" if fewest == most else f"at least {fewest}"
    if not fewest <= len(members) <= (most or len(members)) or any(m.cache for m in members):
        raise TransfuseError(
            f"objective {cfg.objective.name!r} runs its teachers itself: give teacher.ensemble with {count} members, "
            f"each with cache: false (got {len(members)}{', some cached' if any(m.cache for m in members) else ''})"
        )


def _ensemble_model(spec: TeacherSpec, data: Any) -> nn.Module:
    """The members of ``teacher.ensemble`` built and loaded, behind one fused forward (EnsembleModel)."""
    from ..models import build_model
    from ..teachers import EnsembleModel

    if spec.source != "model" or spec.name:
        raise TransfuseError("a teacher with `ensemble:` lists its models there; remove teacher.name / teacher.source")
    if isinstance(spec.weights, str):
        raise TransfuseError("with teacher.ensemble, teacher.weights are fusion weights (one number per member), not a file")
    members = []
    for i, member in enumerate(spec.ensemble or []):
        if member.ensemble is not None or member.source != "model" or not member.name:
            raise TransfuseError(f"teacher.ensemble[{i}] must be a model (name, params, weights), not an ensemble or self")
        if isinstance(member.weights, list):
            raise TransfuseError(f"teacher.ensemble[{i}].weights must be a .safetensors file")
        m = build_model(member.name, member.params, in_shape=data.in_shape, num_classes=data.num_classes)
        if member.weights:
            load_weights(m, member.weights, what=f"teacher.ensemble[{i}]")
        members.append(m.eval())
    return EnsembleModel(members, spec.rule, spec.weights)


def _check_class_counts(teacher: nn.Module, student: nn.Module, data: Any, *, fewer_ok: bool = False) -> None:
    from ..signals import as_outputs

    from ..data._text import teacher_view

    probe = data.train.inputs[:2]
    with torch.inference_mode():
        t = as_outputs(teacher(teacher_view(data.train)[:2])).logits.shape[-1]
        s = as_outputs(student.eval()(probe)).logits.shape[-1]
    student.train()
    check_teacher_classes(t, data)
    if (t > s) if fewer_ok else (t != s):
        raise TransfuseError(f"the teacher predicts {t} classes but the student {s}; give both the same number of classes")
    if s != data.num_classes:
        raise TransfuseError(f"the models predict {s} classes but data {data.name!r} has {data.num_classes}")


def teacher_source(cfg: DistillConfig, pieces: Pieces):
    """A cached teacher (logits computed once, reused across runs), the live frozen model, or an ensemble of them."""
    from ..teachers import SelfTeacher

    if cfg.teacher is not None and cfg.teacher.source == "self":
        return SelfTeacher(every_epochs=cfg.teacher.every_epochs, ema_decay=cfg.teacher.ema_decay)
    if pieces.teacher_model is None:
        return None
    if cfg.teacher.ensemble is not None:  # one source per member (cached or live), fused by the rule
        from ..teachers import EnsembleTeacher

        model = pieces.teacher_model
        members = [_member_source(spec, m, pieces) for spec, m in zip(cfg.teacher.ensemble, model.members)]
        return EnsembleTeacher(members, model.rule, model.weights.tolist())
    return _member_source(cfg.teacher, pieces.teacher_model, pieces)


def _member_source(spec: TeacherSpec, model: nn.Module, pieces: Pieces):
    """One teacher model as a source: its logits cached over the training split, or live."""
    from ..cache import CachedTeacher, build_or_load_logits_cache
    from ..data._text import teacher_view
    from ..teachers import FrozenTeacher

    if not spec.cache:
        return FrozenTeacher(model)
    train = pieces.data.train
    cache = build_or_load_logits_cache(
        model,
        teacher_view(train),
        train.index,
        cache_dir=Path(spec.cache_dir).expanduser(),
        cache_path=spec.cache_path,
    )
    return CachedTeacher(cache)


# ---------------------------------------------------------------------------------------------
# the run


def hold_out(train, n: int, objective, *, seed: int):
    """Keep ``n`` random labelled samples out of training and hand them to the objective (TGeo-KD's
    bilevel outer loss); returns the rest of the training split."""
    if n == 0:
        return train
    if not hasattr(objective, "set_held_out"):
        name = getattr(objective, "registry_name", type(objective).__name__)
        raise TransfuseError(f"data.held_out is only used by objectives that train on a held-out split (tgeo); {name!r} does not")
    labelled = torch.nonzero(train.labels >= 0).squeeze(1)
    if n >= len(labelled):
        raise TransfuseError(f"data.held_out={n} but the training split has only {len(labelled)} labelled samples")
    g = torch.Generator().manual_seed(seed)
    chosen = labelled[torch.randperm(len(labelled), generator=g)[:n]]
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[chosen] = False
    objective.set_held_out(train.inputs[chosen], train.labels[chosen])
    return train.subset(torch.nonzero(keep).squeeze(1))


def prepare_output(cfg: DistillConfig, resume: bool) -> Path:
    return check_output_folder(Path(cfg.output), finished="student.safetensors", resume=resume, overwrite=cfg.overwrite)


def save_student(model: nn.Module, folder: Path, config: Dict[str, Any]) -> None:
    """student.safetensors + config.json, each written to a temp file then renamed."""
    _atomic.save_safetensors({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / "student.safetensors")
    _atomic.write_json(folder / "run_config.json", config)


def save_input_stats(data: Any, folder: Path) -> None:
    """The data set's input standardisation (training-split mean and std), beside the student, so that
    ``transfuse.data.tensors.standardize_like_run`` scales raw inputs for prediction the same way."""
    from ..data.tensors import STATS_FILE

    stats = getattr(data, "input_stats", None)
    if not stats:
        return
    _atomic.save_safetensors({k: v.detach().cpu().float() for k, v in stats.items()}, folder / STATS_FILE)


def save_pretrained_model(model: nn.Module, folder: Path) -> None:
    """A Hugging Face student also as a ``save_pretrained`` folder with its tokenizer (written aside, then renamed)."""
    import shutil

    from ..models.hf_text import tokenizer_of

    if not hasattr(model, "save_pretrained"):
        return
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if tokenizer_of(model) is not None:
        tokenizer_of(model).save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def run(cfg: DistillConfig, *, resume: bool = False) -> Dict[str, Any]:
    """Run a validated config; returns the final metrics."""
    from ..distill.loop import make_loader, train
    from ..eval import evaluate_model, write_report

    from ..eval.report import delta_row, read_baseline

    baseline = read_baseline(cfg.eval.compare_to) if cfg.eval.compare_to else None  # checked before any work
    out = prepare_output(cfg, resume)
    pieces = build_pieces(cfg)
    if cfg.eval.adversarial is not None:
        from ..eval import input_range

        if pieces.data.test is None:
            raise TransfuseError(f"eval.adversarial attacks the test split, but data {cfg.data.name!r} has none; remove eval.adversarial")
        input_range(pieces.data.train.inputs)  # refuses token ids before training
    source = teacher_source(cfg, pieces)
    data = pieces.data
    teacher_test_logits = None
    if pieces.teacher_model is not None and data.test is not None:
        from ..cache.logits import compute_logits
        from ..data._text import teacher_view

        teacher_test_logits = compute_logits(pieces.teacher_model, teacher_view(data.test), batch_size=cfg.data.eval_batch_size)

    def per_epoch(model: nn.Module) -> Dict[str, Any]:
        if data.test is None or not cfg.eval.each_epoch:
            return {}
        m = evaluate_model(model, data.test, teacher_logits=teacher_test_logits, batch_size=cfg.data.eval_batch_size, bins=cfg.eval.bins)
        return {"test_accuracy": m["accuracy"]}

    notes: List[str] = []
    if data.test is None:
        notes.append(_no_test_split_note(cfg))
        print(f"warning: {notes[-1]}", file=sys.stderr)
    train_split = hold_out(data.train, cfg.data.held_out, pieces.objective, seed=cfg.train.seed)
    loader = make_loader(train_split, batch_size=cfg.data.batch_size, seed=cfg.train.seed)
    result = train(
        student=pieces.student,
        teacher=source,
        objective=pieces.objective,
        train_loader=loader,
        epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps,
        optimizer=cfg.optim.name,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        momentum=cfg.optim.momentum,
        schedule=cfg.optim.schedule,
        warmup_steps=cfg.optim.warmup_steps,
        grad_accum=cfg.train.grad_accum,
        grad_clip=cfg.optim.grad_clip,
        mixed_precision=cfg.train.mixed_precision,
        seed=cfg.train.seed,
        output_dir=out,
        checkpoint_every=cfg.train.checkpoint_every,
        resume=resume,
        evaluate=per_epoch,
        progress=cfg.train.progress,
        log_every=cfg.train.log_every,
        stall_steps=cfg.train.stall_steps,
    )
    notes += result.warnings
    metrics: Dict[str, Any] = {"samples_per_second": result.samples_per_second, "steps": result.steps}
    reliability = {}
    if data.test is not None:
        m = evaluate_model(
            result.student, data.test, teacher_logits=teacher_test_logits, batch_size=cfg.data.eval_batch_size,
            bins=cfg.eval.bins, latency=cfg.eval.latency,
        )
        reliability["student"] = (m.pop("probs"), m.pop("labels"))
        m.pop("logits", None)
        metrics.update(m)
        if cfg.eval.adversarial is not None:
            metrics.update(adversarial_metrics(result.student, data, cfg.eval.adversarial))
        if hasattr(pieces.objective, "test_time_adapt"):  # metadmoe: accuracy after adapting on unlabelled test batches
            metrics.update(pieces.objective.test_time_adapt(result.student, data.test, batch_size=cfg.data.batch_size))
    save_student(result.student, out, cfg.model_dump())
    save_input_stats(data, out)
    save_pretrained_model(result.student, out / "model")
    rows = [{"run": "student", **{k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}}]
    if teacher_test_logits is not None:
        rows.append(_teacher_row(pieces.teacher_model, teacher_test_logits, data.test.labels, cfg.eval.bins))
        reliability["teacher"] = (teacher_test_logits.float().softmax(-1), data.test.labels)
    if baseline is not None:
        rows += [{**baseline, "run": f"baseline ({cfg.eval.compare_to})"},
                 delta_row(rows[0], baseline, "student - baseline")]
    write_report(
        out / "report",
        rows=rows,
        curves={"student": result.history},
        reliability=reliability,
        title=f"transfuse distill: {cfg.objective.name}",
        bins=cfg.eval.bins,
        notes=notes,
    )
    return metrics


def adversarial_metrics(model: nn.Module, data: Any, spec: AdversarialSpec) -> Dict[str, Any]:
    """robust_accuracy (+ the attack's name and eps) of ``model`` on ``data.test``, eps relative to the training inputs' range."""
    from ..eval import attack_budget, input_range, robust_accuracy

    bounds = input_range(data.train.inputs)
    r = robust_accuracy(model, data.test, attack=spec.attack, eps=attack_budget(spec.eps, bounds), steps=spec.steps,
                        bounds=bounds, seed=spec.seed, limit=spec.limit)
    return {"robust_accuracy": r["robust_accuracy"], "attack": r["attack"], "attack_eps": spec.eps, "attacked": r["samples"]}


def _teacher_row(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, bins: int) -> Dict[str, Any]:
    """The teacher measured on the same test split as the student (its agreement with itself is 1)."""
    from ..eval.evaluate import logit_scores
    from ..eval.metrics import count_parameters

    return {"run": "teacher", **logit_scores(logits.float(), labels, bins), "agreement": 1.0, "parameters": count_parameters(model)}


def _no_test_split_note(cfg: DistillConfig) -> str:
    """What to say when the data has no test split: nothing is measured, and how to get one."""
    import inspect

    from ..data import datasets

    try:
        takes_fraction = "test_fraction" in inspect.signature(datasets.get(cfg.data.name)).parameters
    except Exception:  # a user's data set that cannot be inspected
        takes_fraction = False
    fix = ("set data.params.test_fraction=0.2 to hold out a stratified test split" if takes_fraction
           else "give the data set a test split (e.g. x_test / y_test, or a data set with data.params.test_fraction)")
    return f"data {cfg.data.name!r} has no test split, so the student was not evaluated (no accuracy, ECE or agreement); {fix}"


def _task(path: Path, overrides: List[str]) -> str:
    from ..config import apply_overrides, read_yaml

    return str(apply_overrides(read_yaml(path), [o for o in overrides if o.startswith("task=")]).get("task", "classify"))


def _lists_students(path: Path) -> bool:
    """A recipe with ``students:`` (several students trained together: recipes/online.py)."""
    from ..config import read_yaml

    return "students" in read_yaml(path)


def main(recipe: str | Path, overrides: List[str], *, resume: bool = False) -> Dict[str, Any]:
    from ..registry import user_code_next_to

    path = resolve_recipe(recipe)
    with user_code_next_to(path):  # dotted paths to the user's modules resolve next to the recipe
        return _main(path, overrides, resume=resume)


def _main(path: Path, overrides: List[str], *, resume: bool) -> Dict[str, Any]:
    from .._console import console

    task = _task(path, overrides)
    if _lists_students(path) and task == "lm":
        from .online_lm import main as online_lm_main

        return online_lm_main(path, overrides, resume=resume)
    if _lists_students(path):
        from .online import main as online_main

        return online_main(path, overrides, resume=resume)
    if task == "lm":
        from .distill_lm import run_recipe

        return run_recipe(path, overrides, resume=resume)
    if task != "classify":
        raise TransfuseError(f"unknown task {task!r} in {str(path)!r}; use task: classify (default) or task: lm")
    cfg = load_config(DistillConfig, path, overrides)
    metrics = run(cfg, resume=resume)
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items() if not isinstance(v, (list, dict))}
    console().print(f"[bold]done[/bold]: {cfg.output}/student.safetensors  {shown}")
    return metrics