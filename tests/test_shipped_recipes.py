"""Every shipped recipe loads: valid config, known names, buildable objective."""
import pytest

from transfuse.config import load_config
from transfuse.recipes.distill import CONFIGS, DistillConfig, resolve_recipe, shipped_recipes

CLASSIFIER_RECIPES = [p.stem for p in sorted(CONFIGS.glob("*.yaml")) if not p.stem.startswith(("lm_", "merge_", "fuse_", "continual_", "federate_", "online_"))]


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
    if cfg.teacher is not None and cfg.teacher.ensemble is not None:
        from transfuse.fusion.rules import rules

        assert all(m.name in models for m in cfg.teacher.ensemble)
        assert cfg.teacher.weights is None or len(cfg.teacher.weights) == len(cfg.teacher.ensemble)  # None: equal weights
        assert (cfg.teacher.rule if isinstance(cfg.teacher.rule, str) else cfg.teacher.rule["name"]) in rules
    elif cfg.teacher is not None and cfg.teacher.source == "model":
        assert cfg.teacher.name in models
    objective = build_objective(cfg.objective.name, cfg.objective.params)
    assert objective.needs_teacher == (cfg.teacher is not None) or not objective.needs_teacher


def test_overrides_are_typed():
    cfg = load_config(DistillConfig, resolve_recipe("kd"), ["train.epochs=7", "optim.lr=0.01", "objective.params.temperature=2"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == 0.01 and cfg.objective.params["temperature"] == 2


@pytest.mark.parametrize("name", [p.stem for p in sorted(CONFIGS.glob("fuse_*.yaml"))])
def test_shipped_fuse_recipe_validates_in_its_mode(name):
    import importlib

    from transfuse.config import read_yaml, validate
    from transfuse.fusion.rules import rules
    from transfuse.recipes.fuse import MODES, resolve_config

    raw = read_yaml(resolve_config(name))
    module = importlib.import_module(MODES[raw.get("mode", "generate")])
    config_class = next(v for k, v in vars(module).items() if k.endswith("Config") and getattr(v, "__module__", "") == module.__name__)
    validate(config_class, raw, source=name)
    named = raw.get("rule", [])
    for rule in named if isinstance(named, list) else [named]:
        assert (rule if isinstance(rule, str) else rule["name"]) in rules
