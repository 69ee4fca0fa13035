"""``transfuse fuse CONFIG.yaml [key=value ...] [--eval]``: read the recipe and run its ``mode:``.

The recipe's ``mode`` (default ``generate``) names a module of ``transfuse.fusion.modes`` whose
``run(config) -> dict`` does the work; the module is imported only when its mode is asked for.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Dict, List, Mapping

from ..config import apply_overrides, read_yaml
from ..errors import TransfuseError, closest

CONFIGS = Path(__file__).parent / "configs"

#: mode -> the module whose ``run(config)`` it calls.
MODES = {
    "generate": "transfuse.fusion.modes.generate",
    "classifiers": "transfuse.fusion.modes.classifiers",
    "cards": "transfuse.fusion.modes.cards",
}


def resolve_config(path: Path) -> Path:
    """The recipe file, or a shipped example by name (``transfuse fuse fuse_generate``)."""
    path = Path(path)
    shipped = CONFIGS / f"{path.name}.yaml"
    if not path.exists() and path.suffix == "" and shipped.exists():
        return shipped
    return path


def load(config_path: Path, overrides: List[str], *, evaluate: bool = False) -> Dict[str, Any]:
    """The recipe as a dict after ``key.sub=value`` overrides; ``--eval`` sets ``eval.enabled: true``."""
    config = apply_overrides(read_yaml(resolve_config(config_path)), overrides)
    if evaluate:
        block = config.get("eval")
        if block is None or block is True:
            block = {}
        if not isinstance(block, dict):
            raise TransfuseError("--eval needs the recipe's 'eval' key to be a mapping such as {data: labelled.jsonl}")
        block["enabled"] = True
        config["eval"] = block
    return config


def run(config: Mapping[str, Any]) -> dict:
    """Dispatch a loaded recipe to its mode's ``run``."""
    mode = config.get("mode", "generate")
    if not isinstance(mode, str) or mode not in MODES:
        raise TransfuseError(f"unknown fuse mode {mode!r}.{closest(str(mode), MODES)} Valid: {', '.join(MODES)}.")
    try:
        module = importlib.import_module(MODES[mode])
    except ModuleNotFoundError as exc:
        if exc.name is not None and MODES[mode].startswith(exc.name):
            raise TransfuseError(f"fuse mode {mode!r} is not available in this version of transfuse ({MODES[mode]} is missing)") from None
        raise
    return module.run(config)


def main(config_path: Path, overrides: List[str], *, evaluate: bool = False) -> dict:
    from ..registry import user_code_next_to

    with user_code_next_to(resolve_config(config_path)):  # dotted paths to the user's modules resolve next to the recipe
        report = run(load(config_path, overrides, evaluate=evaluate))
    written = report.get("written") if isinstance(report, dict) else None
    if written:
        for line in written:
            print(f"wrote {line}")
    return report
