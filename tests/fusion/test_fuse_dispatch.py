"""`transfuse fuse`: the recipe's mode picks the module that runs it; bad modes are one line."""
import pytest
import yaml

from transfuse.errors import TransfuseError
from transfuse.recipes import fuse


def test_unknown_mode_names_the_valid_ones(tmp_path):
    with pytest.raises(TransfuseError, match="unknown fuse mode 'genrate'. Did you mean: generate"):
        fuse.run({"mode": "genrate"})


def test_a_mode_whose_module_is_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(fuse.MODES, "later", "transfuse.fusion.modes.not_written_yet")
    with pytest.raises(TransfuseError, match="fuse mode 'later' is not available"):
        fuse.run({"mode": "later"})


def test_the_mode_module_gets_the_recipe_after_overrides(monkeypatch, tmp_path):
    import sys
    import types

    seen = {}
    module = types.ModuleType("fake_fuse_mode")
    module.run = lambda config: seen.update(config) or {"ok": True}
    monkeypatch.setitem(sys.modules, "fake_fuse_mode", module)
    monkeypatch.setitem(fuse.MODES, "fake", "fake_fuse_mode")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"mode": "fake", "max_new_tokens": 4}))
    assert fuse.main(recipe, ["max_new_tokens=7"], evaluate=True) == {"ok": True}
    assert seen["max_new_tokens"] == 7 and seen["eval"] == {"enabled": True}


def test_cli_prints_one_line_and_exits_2(run_cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("mode: nope\n")
    proc = run_cli("fuse", recipe)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown fuse mode 'nope'") and "Traceback" not in proc.stderr
