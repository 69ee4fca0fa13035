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
    overrides: Optional[List[str]] = typer.Argument(None, help="output=DIR seed=N epochs=N, as the other commands take them."),
    output: Path = typer.Option(Path("runs/demo"), help="Report folder."),
    seed: int = typer.Option(0, help="Random seed."),
    epochs: Optional[int] = typer.Option(None, help="Student epochs (default: the demo's own)."),
) -> None:
    """Distil a small CNN teacher into a small student on Fashion-MNIST and print the comparison."""
    from .recipes.demo import main as demo_main

    given = {"output": output, "seed": seed, "epochs": epochs}
    for item in overrides or []:
        key, eq, value = item.partition("=")
        if not eq or key not in given:
            raise TransfuseError(f"demo takes output=DIR, seed=N and epochs=N; got {item!r}")
        try:
            given[key] = Path(value) if key == "output" else int(value)
        except ValueError:
            raise TransfuseError(f"demo {key} must be a whole number; got {value!r}") from None
    demo_main(**given)


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
    """Run the distillation a YAML recipe describes: a file, or a shipped recipe by name (transfuse list recipes; every key: transfuse explain recipe)."""
    from .recipes.distill import main as distill_main

    distill_main(recipe, overrides or [], resume=resume)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
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


@app.command("extract-lora")
def extract_lora(
    finetuned: Path = typer.Argument(..., help="Fine-tuned model folder."),
    base: Path = typer.Argument(..., help="Its base model folder."),
    out: Path = typer.Argument(..., help="Adapter folder to write (adapter_config.json + adapter_model.safetensors)."),
    rank: int = typer.Option(128, "--rank", "--max-rank", help="Largest LoRA rank (mergekit's --max-rank)."),
    distribute_scale: bool = typer.Option(True, "--distribute-scale/--no-distribute-scale", help="sqrt(S) in both A and B (else S in A)."),
    embed_lora: bool = typer.Option(False, "--embed-lora/--no-embed-lora", help="LoRA on embeddings (else saved at full rank)."),
    save_module: Optional[List[str]] = typer.Option(None, "--save-module", help="Module saved at full rank (repeatable)."),
    include_regex: Optional[List[str]] = typer.Option(None, "--include-regex", "-i", help="Only modules matching (repeatable)."),
    exclude_regex: Optional[List[str]] = typer.Option(None, "--exclude-regex", "-e", help="Skip modules matching (repeatable)."),
    sv_epsilon: float = typer.Option(0.0, "--sv-epsilon", help="Drop singular values at or below this."),
    skip_undecomposable: bool = typer.Option(False, "--skip-undecomposable", help="Drop non-linear modules (norms) instead of saving them."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """A LoRA adapter from a fine-tuned model and its base by truncated SVD (mergekit-extract-lora), loadable by PEFT."""
    from .recipes.extract_lora import main as extract_main

    raise typer.Exit(extract_main(finetuned, base, out, rank=rank, distribute_scale=distribute_scale, embed_lora=embed_lora,
                                  save_modules=save_module or (), include=include_regex or (), exclude=exclude_regex or (),
                                  sv_epsilon=sv_epsilon, skip_undecomposable=skip_undecomposable, overwrite=overwrite))


@app.command()
def moe(
    config: Path = typer.Argument(..., help="mergekit-moe YAML config (base_model, experts, gate_mode, dtype, experts_per_token)."),
    out: Path = typer.Argument(..., help="Output folder for the Mixtral checkpoint."),
    seed: int = typer.Option(0, help="Seed of the random / uniform_random gates and of noise_scale."),
    allow_all_same: bool = typer.Option(False, "--allow-all-same", "--i-understand-this-is-not-useful-without-training", help="Allow every expert to be the same model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """A Mixtral mixture of experts from dense Llama/Mistral experts (mergekit-moe configs)."""
    from .recipes.moe import main as moe_main

    raise typer.Exit(moe_main(config, out, seed=seed, allow_all_same=allow_all_same, overwrite=overwrite))


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
def list_(
    what: str = typer.Argument(..., help="objectives | datasets | models | merge-methods | fusion-rules | continual-methods | online-methods | federated-methods | recipes"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also each one's parameters (recipes: every recipe key)."),
) -> None:
    """Print a registry: each name with a one-line description (and its parameters with --verbose)."""
    from .explain import print_list

    print_list(what, verbose)


@app.command()
def explain(name: str = typer.Argument(..., help="An objective, data set, model, ... name, or `recipe` for every recipe key.")) -> None:
    """Describe one component and each of its parameters (type, default), read from its signature."""
    from .explain import print_explain

    print_explain(name)


def _registry_for(what: str) -> dict:
    from .explain import registry

    if what == "recipes":
        from .recipes.distill import shipped_recipes

        return shipped_recipes()
    return registry(what).describe()


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
