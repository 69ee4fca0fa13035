"""Every objective recipe shipped in the package parses and builds its objective."""

import pytest

from transfuse.config import load_config
from transfuse.objectives import build_objective, objectives
from transfuse.recipes.distill import CONFIGS, DistillConfig

METHODS = ["dkd", "crkd", "mixkd", "kldp", "mapk", "swing", "pskd", "gtsd", "sla", "trg", "talking", "kd3", "tgeo", "hard", "datafree"]


@pytest.mark.parametrize("name", METHODS)
def test_recipe_parses_and_builds(name):
    path = CONFIGS / f"{name}.yaml"
    assert path.exists(), f"no recipe for {name}"
    cfg = load_config(DistillConfig, path, [])
    assert cfg.objective.name == name
    obj = build_objective(cfg.objective.name, cfg.objective.params)
    assert (cfg.teacher is None) == (not obj.needs_teacher)
    if getattr(obj, "changes_inputs", False) or obj.teacher_features:
        assert cfg.teacher is None or not cfg.teacher.cache, "a live teacher is needed"


def test_every_registered_method_of_this_issue_has_a_recipe():
    assert set(METHODS) <= set(objectives.names())
