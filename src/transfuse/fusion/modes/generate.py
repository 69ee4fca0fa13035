"""``transfuse fuse`` with ``mode: generate``: a fused LM's generations for a prompts file, and ``--eval``.

Recipe keys: ``models`` (local Hugging Face folders, as paths or ``{path, weight}``), ``rule`` (a
name or ``{name, params...}``), ``weights``, ``prompts`` (JSONL with a ``"prompt"`` field, or a
text file with one prompt per line), ``chat_template``, ``generation`` (passed to Hugging Face's
``generate``), ``batch_size``, ``seed``, ``output`` (a folder: ``generations.jsonl``,
``report.json``, ``report.md``), ``overwrite``, and ``eval`` (``data``: a labelled JSONL with
``prompt`` and ``answer``): held-out NLL of the answer tokens (teacher-forced through
``fused_logprobs``) and exact match of the greedy answer, for the fused model and each model alone.
"""
from __future__ import annotations

import json
import math
import re
import string
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from pydantic import Field

from ..._atomic import write_text
from ...config import Strict, validate
from ...errors import TransfuseError, closest
from ..generate import FusedModel, check_rule, encode_prompts, fused_generate, fused_logprobs, resolve_rule, resolve_weights

OUTPUTS = ("generations.jsonl", "report.json", "report.md")


class ModelEntry(Strict):
    path: str
    weight: Optional[float] = None


class EvalSpec(Strict):
    enabled: bool = True
    data: Optional[str] = None  # labelled JSONL: {"prompt": ..., "answer": ...} per line
    max_new_tokens: Optional[int] = Field(None, gt=0)  # exact match: default, the answers' longest token count + 2
    limit: Optional[int] = Field(None, gt=0)  # the first this many rows only


class GenerateConfig(Strict):
    mode: str = "generate"
    models: List[Union[str, ModelEntry]]
    rule: Union[str, Dict[str, Any]] = "mean"
    weights: Optional[List[float]] = None
    prompts: Optional[str] = None
    chat_template: bool = False
    generation: Dict[str, Any] = Field(default_factory=lambda: {"max_new_tokens": 32, "do_sample": False})
    batch_size: int = Field(8, gt=0)
    seed: int = 0
    output: str = "runs/fuse"
    overwrite: bool = False
    eval: Optional[EvalSpec] = None


def _generation_keys() -> set:
    from transformers import GenerationConfig

    return set(GenerationConfig().to_dict()) | {"logits_processor", "stopping_criteria"}


def check_generation(settings: Mapping[str, Any]) -> None:
    """Every generation key must be one Hugging Face's ``GenerationConfig`` knows."""
    valid = _generation_keys()
    for key in settings:
        if key not in valid:
            raise TransfuseError(f"generation.{key} is not a Hugging Face generate setting.{closest(key, valid)}")


def read_prompts(path: str) -> List[str]:
    """Prompts from a JSONL file (a ``"prompt"`` field per line) or a text file (one per line)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise TransfuseError(f"prompts file {path!r} does not exist; give a JSONL file with a 'prompt' field or a text file")
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    if file.suffix == ".jsonl":
        prompts = [str(row["prompt"]) for row in _jsonl_rows(file, lines, ("prompt",))]
    else:
        prompts = lines
    if not prompts:
        raise TransfuseError(f"prompts file {path!r} is empty; put one prompt per line")
    return prompts


def read_labelled(path: str, limit: Optional[int] = None) -> List[Dict[str, str]]:
    """(prompt, answer) rows of a labelled JSONL file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise TransfuseError(f"eval data {path!r} does not exist; give a JSONL file with 'prompt' and 'answer' fields")
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    rows = [{"prompt": str(r["prompt"]), "answer": str(r["answer"])} for r in _jsonl_rows(file, lines, ("prompt", "answer"))]
    if not rows:
        raise TransfuseError(f"eval data {path!r} is empty; put one JSON object with 'prompt' and 'answer' per line")
    return rows[:limit] if limit else rows


def _jsonl_rows(file: Path, lines: Sequence[str], fields: Sequence[str]) -> List[dict]:
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise TransfuseError(f"{file}: line {n} is not valid JSON; write one JSON object per line") from None
        missing = [f for f in fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise TransfuseError(f"{file}: line {n} has no {missing[0]!r} field")
        rows.append(row)
    return rows


def normalise_answer(text: str) -> str:
    """Lower case, the first line only, outer punctuation and repeated spaces removed (SQuAD-style, lightly)."""
    first = text.strip().split("\n")[0].lower()
    first = first.strip(string.punctuation + " ")
    return re.sub(r"\s+", " ", first)


def _model_paths_and_weights(cfg: GenerateConfig) -> tuple[List[str], Optional[List[float]]]:
    paths = [m if isinstance(m, str) else m.path for m in cfg.models]
    per_model = [None if isinstance(m, str) else m.weight for m in cfg.models]
    if any(w is not None for w in per_model):
        if cfg.weights is not None:
            raise TransfuseError("give the weights either per model ({path, weight}) or as 'weights', not both")
        return paths, [1.0 if w is None else float(w) for w in per_model]
    return paths, cfg.weights


def _check_inputs(cfg: GenerateConfig) -> Dict[str, Any]:
    """Every check that needs no model: paths, rule, weights, prompts, eval data, output folder."""
    if not cfg.models:
        raise TransfuseError("the recipe lists no models; give 'models' as a list of local Hugging Face folders")
    paths, weights = _model_paths_and_weights(cfg)
    for p in paths:
        folder = Path(p).expanduser()
        if not (folder / "config.json").is_file():
            what = "does not exist" if not folder.exists() else "has no config.json"
            raise TransfuseError(f"model folder {p!r} {what}; give a local Hugging Face model folder")
    rule = resolve_rule(cfg.rule)
    w = resolve_weights(weights, len(paths), rule)
    check_rule(rule, len(paths), w)
    check_generation(cfg.generation)
    evaluate = cfg.eval is not None and cfg.eval.enabled
    if evaluate and not cfg.eval.data:
        raise TransfuseError("evaluation needs eval.data: a labelled JSONL file with 'prompt' and 'answer' fields")
    if cfg.prompts is None and not evaluate:
        raise TransfuseError("the recipe has no 'prompts' file and no evaluation; give prompts: FILE (JSONL or text)")
    prompts = read_prompts(cfg.prompts) if cfg.prompts is not None else []
    labelled = read_labelled(cfg.eval.data, cfg.eval.limit) if evaluate else []
    out = Path(cfg.output).expanduser()
    if out.exists() and not out.is_dir():
        raise TransfuseError(f"output {cfg.output!r} is a file; give a folder for the generations and the report")
    done = [name for name in OUTPUTS if (out / name).exists()]
    if done and not cfg.overwrite:
        raise TransfuseError(f"{out / done[0]} already exists; choose another output folder or set overwrite=true")
    return {"paths": paths, "rule": rule, "weights": w, "prompts": prompts, "labelled": labelled, "output": out}


@torch.no_grad()
def answer_nll(fused: FusedModel, tokenizer: Any, rows: Sequence[Mapping[str, str]], *,
               chat_template: bool, batch_size: int) -> float:
    """Mean negative log-likelihood (nats per answer token) of the answers given their prompts, teacher-forced."""
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        enc = encode_prompts(tokenizer, [r["prompt"] for r in chunk], chat_template=chat_template)
        answers = [tokenizer(r["answer"], add_special_tokens=False)["input_ids"] for r in chunk]
        width = max(len(a) for a in answers)
        pad = tokenizer.pad_token_id
        answer_ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (B, A), right-padded
        answer_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, a in enumerate(answers):
            answer_ids[i, : len(a)] = torch.tensor(a, dtype=torch.long)
            answer_mask[i, : len(a)] = 1
        ids = torch.cat([enc["input_ids"], answer_ids], dim=1)  # (B, P + A)
        mask = torch.cat([enc["attention_mask"], answer_mask], dim=1)
        logp = fused_logprobs(list(fused.models), fused.rule, ids, mask, weights=fused.fusion_weights,
                              tokenizers=fused.tokenizers)  # (B, P + A, V)
        p = enc["input_ids"].shape[1]
        pred = logp[:, p - 1 : -1]  # (B, A, V): position t predicts token t + 1
        target = answer_ids.to(pred.device)
        token_logp = pred.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (B, A)
        keep = answer_mask.to(pred.device).bool()
        total += float(-token_logp[keep].sum())
        count += int(keep.sum())
    return total / max(count, 1)


def exact_match(fused: FusedModel, tokenizer: Any, rows: Sequence[Mapping[str, str]], *, chat_template: bool,
                batch_size: int, max_new_tokens: int) -> tuple[float, List[str]]:
    """Fraction of greedy answers equal to the labels after :func:`normalise_answer`, and the answers."""
    got = fused_generate(fused, None, [r["prompt"] for r in rows], tokenizer=tokenizer, chat_template=chat_template,
                         batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=False)
    hits = [normalise_answer(g) == normalise_answer(r["answer"]) for g, r in zip(got, rows)]
    return sum(hits) / len(rows), got


def run(config: Mapping[str, Any]) -> dict:
    cfg = validate(GenerateConfig, dict(config), source="fuse recipe")
    checked = _check_inputs(cfg)
    paths, rule, weights, out = checked["paths"], checked["rule"], checked["weights"], checked["output"]
    fused = FusedModel(paths, rule, weights=weights)
    tokenizer = fused.tokenizers[0]
    report: Dict[str, Any] = {
        "mode": "generate",
        "models": paths,
        "rule": cfg.rule,
        "weights": weights.tolist(),
        "generation": cfg.generation,
        "chat_template": cfg.chat_template,
    }
    out.mkdir(parents=True, exist_ok=True)
    written: List[str] = []
    if checked["prompts"]:
        started = time.perf_counter()
        texts = fused_generate(fused, None, checked["prompts"], tokenizer=tokenizer, chat_template=cfg.chat_template,
                               batch_size=cfg.batch_size, seed=cfg.seed, **cfg.generation)
        seconds = time.perf_counter() - started
        lines = [json.dumps({"prompt": p, "completion": t}) for p, t in zip(checked["prompts"], texts)]
        write_text(out / "generations.jsonl", "\n".join(lines) + "\n")
        new_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        report["generate"] = {"prompts": len(texts), "seconds": round(seconds, 3), "new_tokens": new_tokens}
        written.append(str(out / "generations.jsonl"))
    if checked["labelled"]:
        report["eval"] = _evaluate(cfg, fused, tokenizer, checked["labelled"])
    write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text(out / "report.md", _markdown(report))
    written += [str(out / "report.json"), str(out / "report.md")]
    report["written"] = written
    return report


def _evaluate(cfg: GenerateConfig, fused: FusedModel, tokenizer: Any, rows: List[Dict[str, str]]) -> Dict[str, Any]:
    longest = max(len(tokenizer(r["answer"], add_special_tokens=False)["input_ids"]) for r in rows)
    max_new = cfg.eval.max_new_tokens or longest + 2
    kw = dict(chat_template=cfg.chat_template, batch_size=cfg.batch_size)
    table = []
    singles = [(p, FusedModel([m], "mean", tokenizers=[t])) for p, m, t in zip(_paths(cfg), fused.models, fused.tokenizers)]
    for name, model in [("fused", fused), *singles]:
        nll = answer_nll(model, tokenizer, rows, **kw)
        em, _ = exact_match(model, tokenizer, rows, max_new_tokens=max_new, **kw)
        table.append({"model": name, "nll": round(nll, 4), "perplexity": round(math.exp(min(nll, 50.0)), 3), "exact_match": round(em, 4)})
    return {"data": cfg.eval.data, "rows": len(rows), "max_new_tokens": max_new, "results": table}


def _paths(cfg: GenerateConfig) -> List[str]:
    return _model_paths_and_weights(cfg)[0]


def _markdown(report: Mapping[str, Any]) -> str:
    rule = report["rule"] if isinstance(report["rule"], str) else json.dumps(report["rule"])
    lines = [f"# transfuse fuse: {rule} over {len(report['models'])} models", ""]
    for i, (p, w) in enumerate(zip(report["models"], report["weights"])):
        lines.append(f"- model {i}: `{p}` (weight {w:g})")
    if "generate" in report:
        g = report["generate"]
        lines += ["", f"Generated {g['prompts']} completions ({g['new_tokens']} new tokens) in {g['seconds']} s: generations.jsonl"]
    if "eval" in report:
        e = report["eval"]
        lines += ["", f"## Evaluation on {e['data']} ({e['rows']} rows)", "",
                  "| model | answer NLL (nats/token) | perplexity | exact match |", "|---|---|---|---|"]
        for r in e["results"]:
            lines.append(f"| {r['model']} | {r['nll']:.4f} | {r['perplexity']:.3f} | {r['exact_match']:.3f} |")
    return "\n".join(lines) + "\n"
