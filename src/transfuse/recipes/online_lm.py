"""``transfuse distill RECIPE.yaml`` with ``task: lm`` and ``students:``: LM students trained together
(CoMD's competitive rounds, :mod:`transfuse.online.methods.comd`).

The teacher, tokenizer, text data and students come from :class:`transfuse.recipes.distill_lm.Prepared`
(the ``task: lm`` recipe's loading: a student is a model folder or some of the teacher's layers); the
prompts are the training records' prompts as the LM recipe reads them (a chat record's turns up to its
first response, plain text's first ``prompts.tokens`` tokens). Writes ``student<i>/`` (save_pretrained
+ tokenizer), ``rounds/`` (each round's students; ``--resume`` continues the unfinished round), a report
(report.md + metrics.json: judge score and win rate per round and student, held-out perplexity per
round and the teacher's NLL of the students' held-out continuations per round) and ``run_config.json`` last. Every check on the input runs
before anything is written.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Dict, List

from pydantic import AliasChoices, Field, field_validator

from ..config import Strict, load_config
from ..errors import TransfuseError
from .distill_lm import LMDataSpec, LMEvalSpec, LMStudentSpec, LMTeacherSpec
from .online import FINISHED, MethodSpec, write_finished



class PromptSpec(Strict):
    tokens: int = Field(16, gt=0)  # plain-text prompts: the first `tokens` tokens of a training row
    count: int = Field(32, gt=0)  # prompts taken from the first training rows


class SeedSpec(Strict):
    seed: int = 0


class OnlineLMConfig(Strict):
    task: str = "lm"
    teacher: LMTeacherSpec = Field(default_factory=LMTeacherSpec)
    students: List[LMStudentSpec]
    method: MethodSpec | str = Field(default_factory=lambda: MethodSpec(name="comd"))
    data: LMDataSpec = Field(default_factory=LMDataSpec)
    prompts: PromptSpec = Field(default_factory=PromptSpec)
    train: SeedSpec = Field(default_factory=SeedSpec)
    eval: LMEvalSpec = Field(default_factory=LMEvalSpec)  # the final students' teacher NLL on held-out prompts
    output: str = Field("runs/online_comd", validation_alias=AliasChoices("output", "output_dir"))
    overwrite: bool = False

    def method_spec(self) -> MethodSpec:
        return MethodSpec(name=self.method) if isinstance(self.method, str) else self.method

    @field_validator("students", mode="before")
    @classmethod
    def _lm_students(cls, value: Any) -> Any:
        """A classifier-style entry ({name: cnn}) gets a sentence on what an LM student is."""
        known = set(LMStudentSpec.model_fields)
        for i, spec in enumerate(value if isinstance(value, list) else []):
            extra = sorted(set(spec) - known) if isinstance(spec, dict) else []
            if extra or not isinstance(spec, dict):
                raise ValueError(f"students[{i}] ({spec!r}) is not an LM student: with task: lm each student is "
                                 "{path: <model folder>} or {layers: <count or list of the teacher's layers>}")
        return value


def check_recipe(cfg: OnlineLMConfig):
    """The method (a rounds method: comd), its parameters and the teacher, before any model is loaded."""
    from ..online import build_method

    spec = cfg.method_spec()
    try:
        method = build_method(spec.name, spec.params)
    except ValueError as exc:  # the method's own range checks (rounds >= 1, ...)
        raise TransfuseError(f"method {spec.name!r}: {exc}; fix method.params") from None
    if method.kind != "rounds":
        raise TransfuseError(
            f"online method {spec.name!r} trains classifiers; `task: lm` with `students:` runs comd "
            "(method: comd), or drop task: lm to train registry classifiers"
        )
    method.check(len(cfg.students))
    if cfg.teacher.ensemble is not None:
        raise TransfuseError("comd's teacher is also its judge: give one teacher.path, not teacher.ensemble")
    return method


def _output(cfg: OnlineLMConfig, *, resume: bool) -> Path:
    """The output rule: a finished run is refused (unless overwrite or --resume); --resume needs rounds."""
    from ._checks import check_output_folder

    out = Path(cfg.output)
    check_output_folder(out, finished=FINISHED, resume=False, overwrite=cfg.overwrite or resume)
    rounds = out / "rounds"
    if resume and not rounds.is_dir():
        raise TransfuseError(f"nothing to resume in {str(out)!r}: it has no rounds/ folder; run without --resume")
    if rounds.is_dir() and not resume and not cfg.overwrite:
        raise TransfuseError(
            f"output folder {str(out)!r} holds rounds of an earlier run; continue it with --resume, "
            "or start clean with overwrite=true (which deletes them)"
        )
    return out


def _prepare(cfg: OnlineLMConfig):
    """Teacher, tokenizer and data through the LM recipe's loader (no top-k cache: comd reads answers)."""
    from .distill_lm import LMConfig, Prepared

    lm = LMConfig(teacher=cfg.teacher.model_copy(update={"cache": False}), student=cfg.students[0], data=cfg.data,
                  eval=cfg.eval, train={"seed": cfg.train.seed, "device": "cpu"})
    return Prepared(lm, log=lambda *_: None)


def build_students(cfg: OnlineLMConfig, prepared) -> list:
    """Each student (a folder or the teacher's layers), checked against the teacher's vocabulary."""
    import torch

    from .distill_lm import check_seq_len

    students = []
    for i, spec in enumerate(cfg.students):
        if spec.path is not None and Path(spec.path, "config.json").is_file():
            from transformers import AutoConfig

            check_seq_len(cfg.data.seq_len, AutoConfig.from_pretrained(spec.path), f"students[{i}] {spec.path!r}")
        torch.manual_seed(cfg.train.seed + i)
        try:
            model, vocab = prepared.student(spec)
        except TransfuseError as exc:
            raise TransfuseError(f"students[{i}]: {exc}") from None
        if vocab != prepared.vocab:
            raise TransfuseError(f"students[{i}] has {vocab} output rows, the teacher {prepared.vocab}; comd needs one vocabulary")
        students.append(model)
    return students


def prompts_of(cfg: OnlineLMConfig, prepared) -> List[List[int]]:
    from .distill_lm import check_seq_len, eval_prompts

    prompts = [p for p in eval_prompts(prepared.train_data, prompt_tokens=cfg.prompts.tokens, samples=cfg.prompts.count) if p]
    if not prompts:
        raise TransfuseError(f"data.source {cfg.data.source!r} gave no training rows to take prompts from; give a text or chat file with records")
    new = cfg.method_spec().params.get("max_new_tokens", 8)
    check_seq_len(max(map(len, prompts)) + int(new), prepared.teacher.config, "teacher (longest prompt + max_new_tokens)")
    return prompts


def run(cfg: OnlineLMConfig, *, resume: bool = False) -> Dict[str, Any]:
    """Run a validated ``task: lm`` + ``students:`` config; returns each student's final metrics."""
    from safetensors.torch import load_file

    from ..eval import write_report
    from ..seeding import seed_everything
    from .distill_lm import perplexity, save_student, teacher_nll

    method = check_recipe(cfg)
    out = _output(cfg, resume=resume)
    seed_everything(cfg.train.seed)
    prepared = _prepare(cfg)
    students = build_students(cfg, prepared)
    prompts = prompts_of(cfg, prepared)
    def held_out(model) -> Dict[str, float]:  # held-out perplexity and teacher NLL of the student's continuations
        return {"held_out_ppl": perplexity(model, prepared.eval_data),
                "teacher_nll": teacher_nll(model, prepared.teacher, prepared.eval_data, prompt_tokens=cfg.eval.prompt_tokens,
                                           new_tokens=cfg.eval.new_tokens, samples=cfg.eval.samples, seed=1000 + cfg.train.seed,
                                           eos_token_id=prepared.eos, pad_token_id=prepared.pad)}

    ppl = {i: {0: held_out(s)} for i, s in enumerate(students)}  # per round
    # everything is checked: from here on the run writes
    if cfg.overwrite and not resume:
        shutil.rmtree(out / "rounds", ignore_errors=True)
        (out / FINISHED).unlink(missing_ok=True)
    result = method.run(students, prepared.teacher, prompts, eos_token_id=prepared.eos, pad_token_id=prepared.pad,
                        seed=cfg.train.seed, output_dir=out / "rounds", resume=resume)
    for i, final in enumerate(result.students):
        probe = copy.deepcopy(final)
        for r in range(1, method.rounds + 1):
            probe.load_state_dict(load_file(str(out / "rounds" / f"round{r}" / f"student{i}.safetensors")))
            ppl[i][r] = held_out(probe)
    curves = {f"student{i}": [{"round": h["round"], "judge_score": h["judge_score"], "teacher_score": h["teacher_score"],
                                "win_rate": h["win_rate"], "pool": h["pool"], **ppl[i][h["round"]]}
                               for h in result.history if h["student"] == i] for i in range(len(students))}
    rows = []
    for i, model in enumerate(result.students):
        last = curves[f"student{i}"][-1]
        rows.append({"run": f"student{i}", "model": cfg.students[i].path or f"teacher layers {cfg.students[i].layers}",
                     "judge_score": last["judge_score"], "start_judge_score": curves[f"student{i}"][0]["judge_score"],
                     "win_rate": last["win_rate"], "held_out_ppl": last["held_out_ppl"],
                     "start_held_out_ppl": ppl[i][0]["held_out_ppl"], "teacher_nll": last["teacher_nll"],
                     "start_teacher_nll": ppl[i][0]["teacher_nll"],
                     "parameters": sum(p.numel() for p in model.parameters())})
    rows.append({"run": "teacher", "model": cfg.teacher.path, "judge_score": result.history[0]["teacher_score"],
                 "held_out_ppl": perplexity(prepared.teacher, prepared.eval_data),
                 "parameters": sum(p.numel() for p in prepared.teacher.parameters())})
    metrics = {r["run"]: {k: v for k, v in r.items() if k != "run"} for r in rows}
    for i, model in enumerate(result.students):
        folder = out / f"student{i}"
        folder.mkdir(parents=True, exist_ok=True)
        save_student(model, prepared.tokenizer, folder, metrics[f"student{i}"])  # save_pretrained + metrics.json
    write_report(out / "report", rows=rows, curves=curves, reliability={}, title=f"transfuse online LM: {cfg.method_spec().name}")
    write_finished(out, cfg)
    return metrics


def main(path: Path, overrides: List[str], *, resume: bool = False) -> Dict[str, Any]:
    from .._console import console

    cfg = load_config(OnlineLMConfig, path, overrides)
    metrics = run(cfg, resume=resume)
    shown = {run: {k: round(v, 4) for k, v in m.items() if k in ("judge_score", "held_out_ppl")} for run, m in metrics.items()}
    console().print(f"[bold]done[/bold]: {cfg.output}/student<i>/  {shown}")
    return metrics


__all__ = ["OnlineLMConfig", "check_recipe", "run", "main"]
