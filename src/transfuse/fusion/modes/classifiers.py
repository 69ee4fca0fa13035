"""``transfuse fuse`` with ``mode: classifiers``: an ensemble of classifiers fused by rules, measured on a test split.

Each model is a classifier the library already loads as a teacher: a registry model with its
weights (``{name, params, weights}``, weights a .safetensors file or ``builtin:<asset>``), or a
``transfuse distill`` run folder (``{run: runs/kd}``: its student from run_config.json and
student.safetensors). Every model's test logits are computed once; each rule in ``rule`` (one
or a list) then fuses their log-softmax. The report (metrics.json, report.md, reliability.png)
holds accuracy, ECE and NLL of every single model and of every fused rule.

Recipe::

    mode: classifiers
    models:
      - {name: cnn, weights: builtin:fashion_mnist_cnn}
      - {run: runs/kd}
    rule: [mean, product, {name: dempster_shafer, strength: 10}]
    weights: [2, 1]            # one per model; default equal
    data: {name: fashion_mnist, params: {}}
    output: runs/fuse_classifiers
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Union

import torch
from pydantic import Field
from torch import Tensor, nn

from ...config import Strict, validate
from ...errors import TransfuseError


class ClassifierSpec(Strict):
    name: Optional[str] = None  # a registry model (transfuse list models)
    params: Dict[str, Any] = Field(default_factory=dict)
    weights: Optional[str] = None  # .safetensors file or builtin:<asset>
    run: Optional[str] = None  # or a `transfuse distill` output folder
    label: Optional[str] = None  # its name in the report


class ClassifierData(Strict):
    name: str
    params: Dict[str, Any] = Field(default_factory=dict)


class ClassifiersConfig(Strict):
    mode: Literal["classifiers"] = "classifiers"
    models: List[ClassifierSpec]
    rule: Union[str, Dict[str, Any], List[Union[str, Dict[str, Any]]]] = "mean"
    weights: Optional[List[float]] = None
    data: ClassifierData
    batch_size: int = Field(1000, gt=0)
    bins: int = Field(15, gt=1)
    output: str = "runs/fuse_classifiers"
    overwrite: bool = False


def _rule_label(rule: Union[str, Mapping[str, Any]]) -> str:
    if isinstance(rule, str):
        return rule
    params = {k: v for k, v in rule.items() if k != "name"}
    return f"{rule.get('name')}({', '.join(f'{k}={v}' for k, v in params.items())})" if params else str(rule.get("name"))


def load_classifier(spec: ClassifierSpec, *, in_shape, num_classes: int, what: str) -> nn.Module:
    """A classifier from a registry spec or a distill run folder, weights loaded, in eval mode."""
    from ...models import build_model
    from ...recipes.distill import load_weights

    if (spec.run is None) == (spec.name is None):
        raise TransfuseError(f"{what} needs either name (a registry model, with weights) or run (a distill output folder)")
    if spec.run is not None:
        folder = Path(spec.run).expanduser()
        cfg_path, weights = folder / "run_config.json", folder / "student.safetensors"
        if not cfg_path.exists() or not weights.exists():
            raise TransfuseError(f"{what}: {str(folder)!r} is not a finished distill run (no run_config.json / student.safetensors)")
        student = json.loads(cfg_path.read_text())["student"]
        model = build_model(student["name"], student.get("params") or {}, in_shape=in_shape, num_classes=num_classes)
        return load_weights(model, str(weights), what=what).eval()
    model = build_model(spec.name, spec.params, in_shape=in_shape, num_classes=num_classes)
    if spec.weights:
        load_weights(model, spec.weights, what=what)
    return model.eval()


def scores(logprobs: Tensor, labels: Tensor, *, bins: int) -> Dict[str, float]:
    """Accuracy, ECE and NLL of log-probs (N, C) against labels (N,) (unlabelled rows, -1, skipped)."""
    from ...eval.metrics import accuracy, expected_calibration_error

    known = labels >= 0
    nll = float(-logprobs[known].gather(1, labels[known].unsqueeze(1)).mean())
    return {
        "accuracy": accuracy(logprobs, labels),
        "ece": expected_calibration_error(logprobs.exp(), labels, bins),
        "nll": nll,
    }


def run(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Fuse the recipe's classifiers with each of its rules on the data's test split; write and return the report."""
    from ...cache.logits import compute_logits
    from ...data import build_data
    from ...eval import write_report
    from ..apply import check_weights, fuse_logits, resolve_rule

    cfg = validate(ClassifiersConfig, dict(config), source="fuse (mode: classifiers)")
    out = Path(cfg.output).expanduser()
    if (out / "metrics.json").exists() and not cfg.overwrite:
        raise TransfuseError(f"output folder {str(out)!r} already holds a report; choose another output=... or set overwrite=true")
    if not cfg.models:
        raise TransfuseError("mode: classifiers needs at least one model under models:")
    rule_specs = cfg.rule if isinstance(cfg.rule, list) else [cfg.rule]
    rules = [(_rule_label(r), resolve_rule(r)) for r in rule_specs]
    weights = {label: check_weights(cfg.weights, len(cfg.models), rule) for label, rule in rules}
    data = build_data(cfg.data.name, cfg.data.params)
    if data.test is None:
        raise TransfuseError(f"data {cfg.data.name!r} has no test split to measure the ensemble on; pick a data set with one")
    labels = data.test.labels  # (N,)
    models = [load_classifier(s, in_shape=data.in_shape, num_classes=data.num_classes, what=f"models[{i}]")
              for i, s in enumerate(cfg.models)]
    names = [s.label or s.run or (f"{s.name}" + (f"[{s.weights}]" if s.weights else "")) for s in cfg.models]
    logits = []
    for name, model in zip(names, models):
        z = compute_logits(model, data.test.inputs, batch_size=cfg.batch_size)  # (N, C)
        if z.shape[-1] != data.num_classes:
            raise TransfuseError(f"model {name!r} predicts {z.shape[-1]} classes but data {cfg.data.name!r} has {data.num_classes}")
        logits.append(z)
    stacked = torch.stack(logits)  # (K, N, C)
    rows, reliability = [], {}
    for name, z in zip(names, logits):
        lp = torch.log_softmax(z, -1)  # (N, C)
        rows.append({"run": name, "kind": "model", **scores(lp, labels, bins=cfg.bins)})
        reliability[name] = (lp.exp(), labels)
    best = max(rows, key=lambda r: r["accuracy"])
    for label, rule in rules:
        fused = fuse_logits(stacked, rule, weights[label])  # (N, C) log-probs
        if not bool(torch.isfinite(fused).any(-1).all()):
            raise TransfuseError(f"rule {label!r} gave no finite log-prob for some samples; check its parameters")
        row = {"run": f"fused:{label}", "kind": "fused", **scores(fused, labels, bins=cfg.bins)}
        row["accuracy_vs_best_single"] = row["accuracy"] - best["accuracy"]
        rows.append(row)
        reliability[row["run"]] = (fused.exp(), labels)
    write_report(out, rows=rows, curves={}, reliability=reliability, title=f"transfuse fuse: {len(models)} classifiers on {cfg.data.name}",
                 bins=cfg.bins)
    return {
        "rows": rows,
        "best_single": best["run"],
        "weights": None if cfg.weights is None else list(cfg.weights),
        "written": [str(out / "report.md"), str(out / "metrics.json")],
    }


__all__ = ["run", "ClassifiersConfig", "load_classifier", "scores"]
