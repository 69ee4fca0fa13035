"""``transfuse.continual.compare``: several methods on the same stream, over seeds, summarised.

Each seed builds the stream with that seed (its subsets, and a domain stream's permutations) and
trains every method from the same initial weights; the summary is the mean and the population
standard deviation of each metric over seeds, and the mean accuracy matrix.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import TransfuseError
from .api import ContinualResult, run
from .streams import build_stream

MethodSpec = Union[str, Mapping[str, Any]]


def method_name_and_params(spec: MethodSpec) -> tuple[str, Dict[str, Any], str]:
    """(registered name, params, label) of ``"ewc"`` or ``{name: ewc, params: {...}, label: ewc-strong}``."""
    if isinstance(spec, str):
        return spec, {}, spec
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise TransfuseError(f"a method is a name or a mapping {{name: ..., params: {{...}}}}; got {spec!r}")
    unknown = set(spec) - {"name", "params", "label"}
    if unknown:
        raise TransfuseError(f"method {spec['name']!r} has unknown keys {sorted(unknown)}; use name, params and label")
    return str(spec["name"]), dict(spec.get("params") or {}), str(spec.get("label") or spec["name"])


def summarise(results: Sequence[ContinualResult]) -> Dict[str, Any]:
    """Mean / std over seeds of every metric, the mean R, b and timeline of one method's runs."""
    keys = list(results[0].metrics)
    values = {k: np.array([r.metrics[k] for r in results], dtype=float) for k in keys}
    return {
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std()) for k, v in values.items()},
        "R": np.mean([r.R for r in results], axis=0).tolist(),
        "b": np.mean([r.b for r in results], axis=0).tolist(),
        "timeline": np.mean([r.timeline for r in results], axis=0).tolist(),
        "seconds": float(np.mean([r.seconds for r in results])),
        "seeds": len(results),
    }


def compare(
    stream: Mapping[str, Any],
    methods: Sequence[MethodSpec],
    *,
    seeds: Sequence[int] = (0,),
    model: str = "mlp",
    model_params: Optional[Dict[str, Any]] = None,
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 1e-3,
    experts: bool = False,
    denominator: str = "T-1",
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Run every method on ``build_stream(**stream, seed=s)`` for every seed s.

    Returns {"stream": description, "methods": {label: summary}, "runs": {label: [result JSON per seed]}}.
    """
    if not methods:
        raise TransfuseError("compare needs at least one method, e.g. methods=[finetune, er]")
    if not seeds:
        raise TransfuseError("compare needs at least one seed, e.g. seeds=[0]")
    specs = [method_name_and_params(m) for m in methods]
    labels = [label for _, _, label in specs]
    if len(set(labels)) != len(labels):
        raise TransfuseError(f"two methods share a label in {labels}; give one of them label: <another name>")
    if "seed" in stream:
        raise TransfuseError("the stream's seed comes from seeds=[...]; remove stream.seed")
    from .methods import methods as registry

    for name, _, _ in specs:
        registry.get(name)  # an unknown name fails now, before any training
    out: Dict[str, Any] = {"methods": {}, "runs": {label: [] for label in labels}}
    for seed in seeds:
        s = build_stream(**dict(stream), seed=int(seed))
        out["stream"] = dict(s.description, seeds=list(seeds), num_classes=s.num_classes, task_ids_known=s.task_ids_known)
        for name, params, label in specs:
            r = run(s, name, method_params=params, model=model, model_params=model_params, epochs=epochs,
                    batch_size=batch_size, lr=lr, seed=int(seed), experts=experts, denominator=denominator,  # type: ignore[arg-type]
                    progress=progress)
            r.method = label
            out["runs"][label].append(r)
    for label in labels:
        out["methods"][label] = summarise(out["runs"][label])
        out["runs"][label] = [r.to_json() for r in out["runs"][label]]
    return out
