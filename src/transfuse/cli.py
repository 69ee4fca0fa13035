"""The command line: one table of commands, each a thin call into a recipe.

Any :class:`TransfuseError` is printed as one line and exits with code 2, without a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import TransfuseError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="transfuse: move knowledge between PyTorch / Hugging Face models.",
)


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo"), help="Report folder."),
    seed: int = typer.Option(0, help="Random seed."),
    epochs: Optional[int] = typer.Option(None, help="Student epochs (default: the demo's own)."),
) -> None:
    """Distil a small CNN teacher into a small student on Fashion-MNIST and print the comparison."""
    from .recipes.demo import main as demo_main

    demo_main(output=output, seed=seed, epochs=epochs)


@app.command("demo-lm")
def demo_lm(
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides of recipes/configs/lm_demo.yaml."),
) -> None:
    """Distil SmolLM2-135M-Instruct into a 4-layer student: no teacher / forward_kl / reverse_kl / taid (~10 min)."""
    from .recipes import lm_demo

    lm_demo.main(lm_demo.load(None, overrides or []))


@app.command()
def distill(
    recipe: Path = typer.Argument(..., help="YAML recipe (see `transfuse list recipes`)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in the output folder."),
) -> None:
    """Run the distillation a YAML recipe describes."""
    from .recipes.distill import main as distill_main

    distill_main(recipe, overrides or [], resume=resume)


@app.command()
def merge(
    config: Path = typer.Argument(..., help="YAML merge config."),
    overrides: Optional[List[str]] = typer.Argument(None, help="OUT_DIR first (as mergekit-yaml CONFIG OUT_DIR), then key.sub=value overrides."),
    check: bool = typer.Option(False, "--check", help="Only check the inputs and report each problem."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow pickle checkpoints (they can run code)."),
) -> None:
    """Merge fine-tuned models into one, streamed tensor by tensor."""
    from .recipes.merge import main as merge_main

    code = merge_main(config, overrides or [], check=check, allow_pickle=allow_pickle)
    raise typer.Exit(code or 0)


@app.command()
def continual(
    recipe: Path = typer.Argument(..., help="YAML continual recipe, or a shipped one by name (continual_split_fmnist)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. stream.scenario=task seeds=[0,1,2]."),
) -> None:
    """Train continual methods along a task stream; report the accuracy matrix and its metrics."""
    from .recipes.continual import main as continual_main

    continual_main(recipe, overrides or [])


@app.command()
def federate(
    recipe: Path = typer.Argument(..., help="YAML federate recipe, or a shipped one by name (federate_dirichlet)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides, e.g. split.alpha=0.1 engine=inprocess."),
) -> None:
    """Federated learning on Flower: fedavg / merge-method aggregation / feddf ... over clients; accuracy per round."""
    from .recipes.federate import main as federate_main

    federate_main(recipe, overrides or [])


@app.command()
def fuse(
    config: Path = typer.Argument(..., help="YAML fuse recipe (mode: generate | classifiers | cards)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.sub=value overrides."),
    evaluate: bool = typer.Option(False, "--eval", help="Also evaluate on the recipe's eval.data labelled file (NLL, exact match)."),
) -> None:
    """Fuse several models at inference: combine their next-token (or class) log-probs with a fusion rule."""
    from .recipes.fuse import main as fuse_main

    fuse_main(config, overrides or [], evaluate=evaluate)


@app.command("list")
def list_(what: str = typer.Argument(..., help="objectives | datasets | models | merge-methods | fusion-rules | continual-methods | federated-methods | recipes")) -> None:
    """Print a registry: each name with a one-line description."""
    from rich.table import Table

    from ._console import console

    table = Table(show_header=True, header_style="bold")
    table.add_column(what.rstrip("s"))
    table.add_column("description")
    for name, line in _registry_for(what).items():
        table.add_row(name, line)
    console().print(table)


def _registry_for(what: str) -> dict:
    from .errors import closest

    if what == "recipes":
        from .recipes.distill import shipped_recipes

        return shipped_recipes()
    registries = {
        "objectives": ("transfuse.objectives", "objectives"),
        "datasets": ("transfuse.data", "datasets"),
        "models": ("transfuse.models", "models"),
        "merge-methods": ("transfuse.merge.methods", "methods"),
        "fusion-rules": ("transfuse.fusion.rules", "rules"),
        "continual-methods": ("transfuse.continual.methods", "methods"),
        "federated-methods": ("transfuse.federate.methods", "methods"),
    }
    if what not in registries:
        valid = list(registries) + ["recipes"]
        raise TransfuseError(f"cannot list {what!r}.{closest(what, valid)} Valid: {', '.join(valid)}.")
    import importlib

    module, attr = registries[what]
    return getattr(importlib.import_module(module), attr).describe()


def main(argv: Optional[List[str]] = None) -> None:
    try:
        app(args=argv, standalone_mode=True)
    except TransfuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
