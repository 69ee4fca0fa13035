"""`transfuse distill` with `students:`: runs end to end (report with each student and the ensemble),
and bad recipes are one `error:` line with exit code 2, before anything is written."""
import json

import pytest
import yaml
from safetensors.torch import load_file

from transfuse.config import load_config
from transfuse.recipes.distill import CONFIGS, resolve_recipe
from transfuse.recipes.online import OnlineConfig


def _recipe(tmp_path, name="online_dml", **changes):
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    cfg["data"] = {"name": "digits", "params": {"seed": 0}, "batch_size": 64}
    cfg["students"] = [{"name": "mlp", "params": {"hidden": [32]}}, {"name": "mlp", "params": {"hidden": [8]}}]
    cfg["train"] = {"epochs": 2, "seed": 0}
    cfg["output"] = str(tmp_path / "out")
    cfg.update(changes)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("name, kind", [("online_dml", "joint"), ("online_bdkd", "joint"), ("online_takd", "staged")])
def test_shipped_online_recipes_validate(name, kind):
    from transfuse.data import datasets
    from transfuse.models import models
    from transfuse.recipes.online import check_recipe

    cfg = load_config(OnlineConfig, resolve_recipe(name), [])
    assert cfg.data.name == "fashion_mnist" and all(s.name in models for s in cfg.students) and cfg.data.name in datasets
    assert check_recipe(cfg).kind == kind


@pytest.mark.slow
def test_online_recipe_end_to_end_with_ensemble(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path, name="online_bdkd"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    rows = {r["run"]: r for r in json.loads((out / "report" / "metrics.json").read_text())["rows"]}
    assert set(rows) == {"student0", "student1", "ensemble"}
    for row in rows.values():
        assert 0.5 < row["accuracy"] <= 1.0 and 0.0 <= row["ece"] <= 1.0  # digits: far above chance (0.1)
    assert rows["ensemble"]["parameters"] == rows["student0"]["parameters"] + rows["student1"]["parameters"]
    a, b = load_file(out / "student0" / "student.safetensors"), load_file(out / "student1" / "student.safetensors")
    assert a["net.1.weight"].shape != b["net.1.weight"].shape if "net.1.weight" in a else a.keys() == b.keys()
    assert (out / "run_config.json").exists() and (out / "report" / "reliability.png").exists()
    again = run_cli("distill", tmp_path / "recipe.yaml")  # a finished run is not overwritten
    assert again.returncode == 2 and "already holds a finished run" in again.stderr


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"students": [{"name": "mlp"}]}, "needs at least 2 students and 1 was given"),
        ({"method": {"name": "dmll"}}, "unknown online-method 'dmll'"),
        ({"method": {"name": "dml", "params": {"temp": 2}}}, "has no parameter 'temp'"),
        ({"method": "comd"}, "trains causal LMs in rounds"),
        ({"students": [{"name": "mlp", "lr": 0.1}, {"name": "mlp"}], "shared_optimizer": True}, "students[].lr needs one optimizer per student"),
        ({"students": [{"name": "mlpp"}, {"name": "mlp"}]}, "unknown model 'mlpp'"),
        ({"student": {"name": "mlp"}}, "unknown key 'student'"),
    ],
)
def test_bad_online_recipes_are_one_line_exit_2(capsys, tmp_path, changes, message):
    from transfuse.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["distill", str(_recipe(tmp_path, **changes))])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_online_recipe_from_the_command_line(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path, students=[{"name": "mlp"}]))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_list_online_methods(run_cli):
    proc = run_cli("list", "online-methods")
    assert proc.returncode == 0, proc.stderr
    for name in ("dml", "bdkd"):
        assert name in proc.stdout
