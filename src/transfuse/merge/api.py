"""``transfuse.merge(config)``: the Python entry point of the merge engine."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Union

from ..config import apply_overrides, load_config, validate
from ..errors import TransfuseError
from .config import MergeConfig
from .plan import make_plan


def load_merge_config(config_or_path: Union[str, Path, Mapping[str, Any], MergeConfig], overrides: Iterable[str] = ()) -> MergeConfig:
    if isinstance(config_or_path, MergeConfig):
        data = config_or_path.model_dump(mode="json")
        return validate(MergeConfig, apply_overrides(data, overrides))
    if isinstance(config_or_path, Mapping):
        import copy

        return validate(MergeConfig, apply_overrides(copy.deepcopy(dict(config_or_path)), overrides))
    cfg = load_config(MergeConfig, config_or_path, overrides)
    cfg._source_text = Path(config_or_path).read_text()  # mergekit writes it beside the card (mergekit_config.yml)
    return cfg


def check(config_or_path, overrides: Iterable[str] = (), *, allow_pickle: bool = False) -> list:
    """Every problem the inputs have, one line each ([] when the merge can run)."""
    cfg = load_merge_config(config_or_path, overrides)
    plan = make_plan(cfg, allow_pickle=allow_pickle)
    try:
        return list(plan.problems)
    finally:
        plan.close()


def merge(config_or_path, overrides: Iterable[str] = (), *, check: bool = False, allow_pickle: bool = False,
          progress: bool = False) -> Union[Path, list]:
    """Merge the models a config (path, dict or MergeConfig) names; returns the output folder.

    With ``check=True`` nothing is written and the list of problems (one line each) is returned.
    Any problem with the inputs raises :class:`TransfuseError` before any work.
    """
    from .engine import execute

    cfg = load_merge_config(config_or_path, overrides)
    if not check and not cfg.output:
        raise TransfuseError("the merge config needs output: the folder to write the merged model to")
    if not check and Path(cfg.output).exists() and not cfg.overwrite:
        raise TransfuseError(f"output {cfg.output!r} already exists; remove it, pick another, or set overwrite=true")
    plan = make_plan(cfg, allow_pickle=allow_pickle)
    if check:
        plan.close()
        return list(plan.problems)
    if plan.problems:
        plan.close()
        more = f" (and {len(plan.problems) - 1} more; run `transfuse merge --check`)" if len(plan.problems) > 1 else ""
        raise TransfuseError(plan.problems[0] + more)
    summary: Dict[str, Any] = execute(plan, Path(cfg.output), progress=progress)
    return Path(summary["output"])
