"""Every shipped recipe loads: valid config, known names, buildable objective."""
import pytest

from transfuse.config import load_config
from transfuse.recipes.distill import CONFIGS, DistillConfig, resolve_recipe, shipped_recipes

CLASSIFIER_RECIPES = [p.stem for p in sorted(CONFIGS.glob("*.yaml")) if not p.stem.startswith(("lm_", "merge_", "fuse_", "continual_", "federate_"))]


def test_there_are_shipped_recipes():
    assert {"kd", "ce", "kd_live", "reverse_kl", "jsd", "combined"} <= set(shipped_recipes())


@pytest.mark.parametrize("name", CLASSIFIER_RECIPES)
def test_shipped_recipe_loads(name):
    from transfuse.data import datasets
    from transfuse.models import models
    from transfuse.objectives import build_objective

    cfg = load_config(DistillConfig, resolve_recipe(name), [])
    assert cfg.data.name in datasets
    assert cfg.student.name in models
    if cfg.teacher is not None and cfg.teacher.source == "model":
        assert cfg.teacher.name in models
    objective = build_objective(cfg.objective.name, cfg.objective.params)
    assert objective.needs_teacher == (cfg.teacher is not None) or not objective.needs_teacher


def test_overrides_are_typed():
    cfg = load_config(DistillConfig, resolve_recipe("kd"), ["train.epochs=7", "optim.lr=0.01", "objective.params.temperature=2"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == 0.01 and cfg.objective.params["temperature"] == 2
