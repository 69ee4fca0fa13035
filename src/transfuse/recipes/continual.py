"""``transfuse continual RECIPE.yaml [k=v ...]``: methods along one task stream, over seeds, and the report.

The recipe (recipes/configs/continual_split_fmnist.yaml is the shipped example)::

    stream: {scenario: class, dataset: fashion_mnist, tasks: 5, train_per_task: 2000}   # build_stream's keys
    methods: [finetune, ewc, lwf, er, der, {name: cuber, params: {threshold: 0.97}}]
    model: {name: mlp, params: {hidden: [256]}}
    train: {epochs: 2, batch_size: 64, lr: 0.001}
    seeds: [0, 1, 2]
    output: runs/continual
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Dict, List, Literal, Union

from pydantic import Field

from ..config import Strict, load_config
from ..errors import TransfuseError, closest
from ._checks import resolve_shipped


class StreamModel(Strict):
    name: str = "mlp"
    params: Dict[str, Any] = Field(default_factory=dict)


class ContinualTrain(Strict):
    epochs: int = Field(2, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0)


class ContinualConfig(Strict):
    stream: Dict[str, Any] = Field(default_factory=lambda: {"scenario": "class", "dataset": "fashion_mnist", "tasks": 5})
    methods: List[Union[str, Dict[str, Any]]] = Field(default_factory=lambda: ["finetune", "er"])
    model: StreamModel = Field(default_factory=StreamModel)
    train: ContinualTrain = Field(default_factory=ContinualTrain)
    seeds: List[int] = Field(default_factory=lambda: [0])
    experts: bool = False  # also train single-task experts (l2metrics' ratios, sample efficiency)
    denominator: Literal["T-1", "T"] = "T-1"  # BWT / FWT / forgetting averaged over T-1 tasks (GEM) or T
    output: str = "runs/continual"
    overwrite: bool = False


def _check_stream_keys(stream: Dict[str, Any]) -> None:
    from ..continual.streams import build_stream

    valid = list(inspect.signature(build_stream).parameters)  # a stream.seed is refused by compare
    for key in stream:
        if key not in valid:
            raise TransfuseError(f"unknown stream key {key!r}.{closest(key, valid)} Valid: {', '.join(valid)}.")


def prepare_output(cfg: ContinualConfig) -> Path:
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise TransfuseError(f"output {str(out)!r} is a file, not a folder; choose another output=<folder>")
    if (out / "results.json").exists() and not cfg.overwrite:
        raise TransfuseError(f"output folder {str(out)!r} already holds a continual report; choose another output=... or set overwrite=true")
    if out.is_dir() and any(out.iterdir()) and not (out / "results.json").exists() and not (out / "report.md").exists():
        raise TransfuseError(f"output folder {str(out)!r} holds other files; choose an empty or new output=<folder>")
    return out


def run(cfg: ContinualConfig) -> Dict[str, Any]:
    """Run a validated config, write the report; returns the summary (see continual.compare)."""
    from ..continual.compare import compare
    from ..continual.report import write_continual_report

    _check_stream_keys(cfg.stream)
    out = prepare_output(cfg)
    progress = (lambda line: print(line, file=sys.stderr, flush=True))
    summary = compare(cfg.stream, cfg.methods, seeds=cfg.seeds, model=cfg.model.name, model_params=cfg.model.params,
                      epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
                      experts=cfg.experts, denominator=cfg.denominator, progress=progress)
    scenario = summary["stream"].get("scenario", "")
    write_continual_report(out, summary, f"continual: {scenario} stream of {summary['stream'].get('dataset') or 'data sets'}")
    return summary


def main(recipe: str | Path | None, overrides: List[str]) -> Dict[str, Any]:
    recipe = resolve_shipped(recipe, "continual")  # a path, or a shipped example by name
    from ..registry import user_code_next_to

    with user_code_next_to(recipe):  # dotted paths to the user's modules resolve next to the recipe
        cfg = load_config(ContinualConfig, recipe, overrides)
        summary = run(cfg)
    from ..continual.report import metrics_rows
    from ..eval.report import markdown_table

    print(markdown_table(metrics_rows(summary)))
    print(f"report written to {cfg.output}/report.md")
    return summary
