"""``transfuse federate RECIPE.yaml [k=v ...]``: federated methods over clients, on Flower or in process.

The recipe (recipes/configs/federate_dirichlet.yaml is the shipped example)::

    data: {name: fashion_mnist, params: {train_size: 6000, test_size: 1000}}
    split: {kind: dirichlet, alpha: 0.5}          # iid | dirichlet | shards | domain
    clients: 10
    rounds: 10
    local: {epochs: 1, batch_size: 32, lr: 0.05}
    model: {name: mlp, params: {hidden: [128]}}
    server_data: 1000                              # unlabelled samples the server keeps (feddf, knfu)
    methods: [fedavg, {name: fedavg, aggregate: {name: ties, params: {density: 0.3}}}, {name: feddf}]
    engine: flower                                 # or inprocess, or deployment (SuperLink + SuperNodes)
    output: runs/federate
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from ._checks import resolve_shipped


def main(recipe: str | Path | None, overrides: List[str]) -> Dict[str, Any]:
    from ..eval.report import markdown_table
    from ..federate.api import federate, load_federate_config, stderr_progress
    from ..federate.report import summary_rows

    recipe = resolve_shipped(recipe, "federate")  # a path, or a shipped example by name
    from ..registry import user_code_next_to

    with user_code_next_to(recipe):  # dotted paths to the user's modules resolve next to the recipe
        cfg = load_federate_config(recipe, overrides)
        summary = federate(cfg, progress=stderr_progress)
    print(markdown_table(summary_rows(summary)))
    print(f"report written to {cfg.output}/report.md")
    return summary
