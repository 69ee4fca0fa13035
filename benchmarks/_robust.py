"""What the robust_* benchmarks share: one recipe run in this process, and mean ± std cells."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Dict, List, Sequence


def run_recipe(recipe: str, overrides: Sequence[str], output: Path) -> Dict[str, Any]:
    """`transfuse distill RECIPE overrides output=...` in this process; its final metrics."""
    from transfuse.recipes.distill import main

    return main(recipe, [*overrides, f"output={output}", "overwrite=true", "train.progress=false", "eval.latency=false"])


def builtin_cnn(data):
    """The built-in Fashion-MNIST CNN (the shipped recipes' clean teacher), loaded for ``data``."""
    from transfuse.models import build_model
    from transfuse.recipes.distill import load_weights

    return load_weights(build_model("cnn", {}, in_shape=data.in_shape, num_classes=data.num_classes), "builtin:fashion_mnist_cnn", what="teacher")


def cell(values: List[float], scale: float = 100.0) -> str:
    """mean ± sample std (x scale), or the one value."""
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
