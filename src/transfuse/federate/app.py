"""Module-level Flower apps for ``flwr run`` (real processes: a SuperLink and SuperNodes):
``transfuse.federate.app:server_app`` and ``transfuse.federate.app:client_app``, named by the
shipped Flower App ``flower_app/pyproject.toml``.

Both read the run config (``[tool.flwr.app.config]``): ``recipe`` (a YAML path) or ``config`` (the
recipe as JSON), ``overrides``, ``method`` (a label; default the first), ``seed`` (default the
first), ``output`` (the ServerApp writes ``final/state.safetensors`` there: the global model(s)
and, in its metadata, the per-round history). The recipe's ``checkpoint_dir`` makes the ServerApp
checkpoint every round and resume after the last one when it is started again.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Tuple

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from ..errors import TransfuseError
from .config import AggregateSpec, FederateConfig, MethodSpec


@lru_cache(maxsize=4)
def _resolve(recipe: str, config: str, overrides: str, method: str, seed: int) -> Tuple[FederateConfig, MethodSpec, AggregateSpec, int]:
    from .api import _label, load_federate_config

    if config:
        cfg = load_federate_config(FederateConfig.model_validate_json(config), overrides.split())
    elif recipe:
        cfg = load_federate_config(recipe, overrides.split())
    else:
        raise TransfuseError("the Flower App needs a recipe: flwr run . CONNECTION --run-config 'recipe=\"federate.yaml\"'")
    specs = {_label(s, cfg): s for s in cfg.method_specs()}
    if method and method not in specs:
        raise TransfuseError(f"method {method!r} is not in the recipe; its methods: {', '.join(specs)}")
    spec = specs[method] if method else next(iter(specs.values()))
    return cfg, spec, spec.aggregate or cfg.aggregate, seed if seed >= 0 else cfg.seeds[0]


def resolve(run_config: Mapping[str, Any]) -> Tuple[FederateConfig, MethodSpec, AggregateSpec, int]:
    """(config, method, aggregation, seed) of a run from its Flower run config."""
    return _resolve(str(run_config.get("recipe", "")), str(run_config.get("config", "")), str(run_config.get("overrides", "")),
                    str(run_config.get("method", "")), int(run_config.get("seed", -1)))


server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def _server_main(grid, context) -> None:
    from .api import _label
    from .checkpoint import load_checkpoint, save_checkpoint
    from .federation import Server, build_federation
    from .flower import run_strategy

    cfg, spec, agg, seed = resolve(context.run_config)
    server = Server(build_federation(cfg, seed), spec, agg)
    ckpt = Path(cfg.checkpoint_dir) / f"{_label(spec, cfg)}-seed{seed}" if cfg.checkpoint_dir else None
    start = load_checkpoint(server, ckpt) if ckpt is not None else 1
    run_strategy(server, grid, start=start, checkpoint=ckpt)
    save_checkpoint(server, Path(str(context.run_config.get("output", "runs/federate-flwr"))) / "final")


@client_app.train()
def _client_train(msg, context):
    from .flower import train_reply

    cfg, spec, _, seed = resolve(context.run_config)
    return train_reply(msg, context, cfg.model_dump_json(), seed, spec.model_dump_json())
