"""The shipped example configs validate, build their methods, and run when pointed at real models."""
from pathlib import Path

import pytest
import yaml

import transfuse
from transfuse.merge.api import load_merge_config
from transfuse.merge.plan import build_method

from merge_helpers import read_model

CONFIGS = sorted((Path(transfuse.__file__).parent / "recipes" / "configs").glob("merge_*.yaml"))


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_validates(path):
    assert path.read_text().startswith("# merge:")
    cfg = load_merge_config(path)
    build_method(cfg.method, cfg.parameters)
    for o in cfg.overrides:
        build_method(cfg.method, {**cfg.parameters, **o.parameters})


def test_shipped_config_runs_by_name_with_overrides(family, capsys):
    from transfuse.cli import main

    p = family["paths"]
    models = yaml.safe_dump([{"model": str(p["e0"])}, {"model": str(p["e1"])}], default_flow_style=True).strip()
    out = family["root"] / "shipped"
    with pytest.raises(SystemExit) as exc:
        main(["merge", "merge_ties", f"base_model={p['base']}", f"models={models}", f"output={out}"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert read_model(out)["model.norm.weight"].shape == (8,)


def test_positional_output_dir_is_the_output_override():
    from transfuse.recipes.merge import positional_output

    assert positional_output(["./out", "dtype=float32"]) == ['output="./out"', "dtype=float32"]
    from transfuse.config import apply_overrides

    for name in ("1", "on", "null", "./out dir"):  # YAML scalars stay paths
        assert apply_overrides({}, positional_output([name]))["output"] == name
    assert positional_output(["output=x", "dtype=float32"]) == ["output=x", "dtype=float32"]
    assert positional_output([]) == []
