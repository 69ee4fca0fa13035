"""``transfuse.federate(config)``: run every method of a federate recipe over its seeds; write the report."""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union

import numpy as np

from ..config import apply_overrides, load_config, validate
from ..errors import TransfuseError
from .config import FederateConfig, MethodSpec


def load_federate_config(config: Union[str, Path, Mapping[str, Any], FederateConfig, None], overrides: Iterable[str] = ()) -> FederateConfig:
    if isinstance(config, FederateConfig):
        return validate(FederateConfig, apply_overrides(config.model_dump(mode="json"), overrides))
    if isinstance(config, Mapping):
        return validate(FederateConfig, apply_overrides(copy.deepcopy(dict(config)), overrides))
    return load_config(FederateConfig, config, overrides)


def check_config(cfg: FederateConfig) -> None:
    """Every name and parameter the recipe gives, checked before any training."""
    from .aggregate import check_aggregator
    from .federation import check_architectures
    from .methods import build_method

    labels = []
    for spec in cfg.method_specs():
        build_method(spec.name, spec.params)
        agg = spec.aggregate or cfg.aggregate
        check_aggregator(agg.name, agg.params)
        labels.append(_label(spec, cfg))
        if spec.name in ("feddf", "knfu") and not cfg.server_data:
            raise TransfuseError(f"method {spec.name!r} needs server data: set server_data=N (unlabelled training samples the server keeps)")
        if spec.name == "fedka" and (cfg.target_rotate is None or not cfg.server_data):
            raise TransfuseError("method 'fedka' adapts to a target domain: set target_rotate=DEGREES and server_data=N (its unlabelled target inputs)")
        check_architectures(spec.name, build_method(spec.name, spec.params), len(cfg.model_specs()))
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise TransfuseError(f"two methods share the label {dupes[0]!r}; give one of them label: NAME")
    if cfg.clients_per_round and cfg.clients_per_round > cfg.clients:
        raise TransfuseError(f"clients_per_round={cfg.clients_per_round} exceeds clients={cfg.clients}")
    if not cfg.model_specs():
        raise TransfuseError("model is an empty list; give one model, or several client architectures as a list")
    if cfg.federation.client_timeout is not None and cfg.engine == "inprocess":
        raise TransfuseError("federation.client_timeout needs clients in other processes: set engine=flower or engine=deployment")
    if cfg.engine in ("flower", "deployment"):
        from .flower import require_flower

        require_flower()


def _label(spec: MethodSpec, cfg: FederateConfig) -> str:
    from .federation import method_label

    return method_label(spec, spec.aggregate or cfg.aggregate)


def prepare_output(cfg: FederateConfig) -> Path:
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise TransfuseError(f"output {str(out)!r} is a file, not a folder; choose another output=<folder>")
    if (out / "results.json").exists() and not cfg.overwrite:
        raise TransfuseError(f"output folder {str(out)!r} already holds a federate report; choose another output=... or set overwrite=true")
    if out.is_dir() and any(out.iterdir()) and not (out / "results.json").exists():
        raise TransfuseError(f"output folder {str(out)!r} holds other files; choose an empty or new output=<folder>")
    return out


def run_method(cfg: FederateConfig, spec: MethodSpec, seed: int, *, progress: Optional[Callable[[str], None]] = None,
               fail: Optional[Callable[[int, int], bool]] = None) -> Dict[str, Any]:
    """One method under one seed on the recipe's engine: its per-round history and wall time."""
    ckpt = Path(cfg.checkpoint_dir) / f"{_label(spec, cfg)}-seed{seed}" if cfg.checkpoint_dir else None
    from .federation import build_federation
    from .inprocess import run_inprocess

    agg = spec.aggregate or cfg.aggregate
    t0 = time.perf_counter()
    if cfg.engine == "flower":
        from .flower import run_flower

        server = run_flower(cfg, seed, spec, agg, progress=progress, checkpoint=ckpt)
    elif cfg.engine == "deployment":
        from .deployment import run_deployment

        server = run_deployment(cfg, seed, spec, agg, progress=progress, checkpoint=ckpt)
    else:
        server = run_inprocess(build_federation(cfg, seed), spec, agg, progress=progress, fail=fail, checkpoint=ckpt)
    return {"seed": seed, "history": server.history, "seconds": time.perf_counter() - t0}


def summarise(cfg: FederateConfig, runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Per method: mean (and std over seeds) of the per-round accuracies, final values, bytes."""
    methods: Dict[str, Any] = {}
    for label, seeds in runs.items():
        curve = {}
        for key in ("global_acc", "mean_local_acc", "target_acc"):
            if key in seeds[0]["history"][0]:
                a = np.array([[h[key] for h in s["history"]] for s in seeds])  # (S, R)
                curve[key] = {"mean": a.mean(0).tolist(), "std": a.std(0).tolist()}
        last = [s["history"][-1] for s in seeds]
        per_client: Dict[str, float] = {}
        for k in last[0]["clients"]:
            vals = [h["clients"][k]["local_acc"] for h in last if k in h["clients"]]
            per_client[k] = float(np.mean(vals))
        methods[label] = {
            "curves": curve,
            "final": {k: v["mean"][-1] for k, v in curve.items()},
            "final_std": {k: v["std"][-1] for k, v in curve.items()},
            "per_client_local_acc": per_client,
            "bytes": float(np.mean([sum(h["bytes_down"] + h["bytes_up"] for h in s["history"]) for s in seeds])),
            "seconds": float(np.mean([s["seconds"] for s in seeds])),
            "seeds": len(seeds),
            "runs": seeds,
        }
    return {"config": cfg.model_dump(mode="json"), "methods": methods}


def federate(config: Union[str, Path, Mapping[str, Any], FederateConfig, None] = None, overrides: Iterable[str] = (), *,
             progress: Optional[Callable[[str], None]] = None, write: bool = True) -> Dict[str, Any]:
    """Run a federate recipe (path, dict or FederateConfig); returns the summary, written to ``output``
    as results.json, report.md and accuracy.png (``write=False``: nothing written)."""
    from .report import write_federate_report

    cfg = load_federate_config(config, overrides)
    check_config(cfg)
    out = prepare_output(cfg) if write else None
    from .federation import build_federation

    build_federation(cfg, cfg.seeds[0])  # a wrong data set or model fails now
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for spec in cfg.method_specs():
        label = _label(spec, cfg)
        for seed in cfg.seeds:
            say = (lambda line, label=label, seed=seed: progress(f"[{label} seed {seed}] {line}")) if progress else None
            runs.setdefault(label, []).append(run_method(cfg, spec, seed, progress=say))
    summary = summarise(cfg, runs)
    if out is not None:
        write_federate_report(out, summary)
    return summary


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
