"""Bad input: one clear line on stderr, exit code 2, no traceback, nothing written."""

from pathlib import Path

import pytest
import yaml

from transfuse.recipes.distill import CONFIGS


def _recipe(tmp_path, **changes):
    cfg = yaml.safe_load((CONFIGS / "kd.yaml").read_text())
    for dotted, value in changes.items():
        node = cfg
        parts = dotted.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    cfg["output"] = str(tmp_path / "out")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _assert_clean_error(proc, pattern, tmp_path=None):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    import re

    assert re.search(pattern, lines[0]), lines[0]
    if tmp_path is not None:
        assert not (tmp_path / "out").exists(), "an error left output behind"


def test_missing_recipe_file(run_cli, tmp_path):
    _assert_clean_error(run_cli("distill", tmp_path / "nope.yaml"), r"neither a file nor a shipped recipe")


def test_unknown_objective_suggests(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path, objective__name="kdd"))
    _assert_clean_error(proc, r"unknown objective 'kdd'\. Did you mean: kd", tmp_path)


def test_unknown_key_suggests(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path), "train.epoch=3")
    _assert_clean_error(proc, r"unknown key 'train\.epoch'\. Did you mean: epochs", tmp_path)


def test_wrong_type(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path), "train.epochs=many")
    _assert_clean_error(proc, r"train\.epochs", tmp_path)


def test_unknown_objective_parameter(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path), "objective.params.temprature=2")
    _assert_clean_error(proc, r"no parameter 'temprature'\. Did you mean: temperature", tmp_path)


def test_missing_weights_file(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path, teacher__weights=str(tmp_path / "missing.safetensors")))
    _assert_clean_error(proc, r"weights .* do not exist", tmp_path)


def test_pickle_weights_refused(run_cli, tmp_path):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"not really")
    proc = run_cli("distill", _recipe(tmp_path, teacher__weights=str(bad)))
    _assert_clean_error(proc, r"must be a \.safetensors file", tmp_path)


def test_class_count_mismatch(run_cli, tmp_path):
    # a teacher with the wrong head: the cnn's weights for 10 classes cannot load into 3 outputs,
    # so build a tensors data set with 3 classes and a 10-class teacher file instead
    import numpy as np

    x = np.random.rand(40, 1, 28, 28).astype("float32")
    y = np.arange(40) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    proc = run_cli("distill", _recipe(tmp_path, data__name="tensors", data__params={"path": str(tmp_path / "d.npz")}))
    _assert_clean_error(proc, r"(classes|do not fit)", tmp_path)


def test_labels_out_of_range(run_cli, tmp_path):
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.random.rand(40, 4).astype("float32"), y=np.arange(40) % 3 + 5)
    cfg = {
        "student": {"name": "mlp"},
        "objective": {"name": "ce"},
        "data": {"name": "tensors", "params": {"path": str(tmp_path / "d.npz"), "num_classes": 3}},
        "output": str(tmp_path / "out"),
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_cli("distill", tmp_path / "r.yaml")
    _assert_clean_error(proc, r"label", tmp_path)


def test_nan_loss_names_the_step(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path, data__params={"train_size": 600, "test_size": 100, "labelled": 100}),
                   "optim.lr=1e30", "optim.schedule=constant", "teacher.cache=false")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "at step" in proc.stderr and "learning rate" in proc.stderr
    assert not (tmp_path / "out" / "student.safetensors").exists()


def test_finished_run_is_not_overwritten(run_cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "student.safetensors").write_bytes(b"precious")
    proc = run_cli("distill", _recipe(tmp_path))
    assert proc.returncode == 2 and "already holds a finished run" in proc.stderr
    assert (out / "student.safetensors").read_bytes() == b"precious"


def test_resume_without_checkpoint(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path), "--resume")
    _assert_clean_error(proc, r"nothing to resume", tmp_path)


def test_list_unknown_registry(run_cli):
    _assert_clean_error(run_cli("list", "objectivs"), r"Did you mean: objectives")


@pytest.mark.parametrize("what", ["objectives", "datasets", "models", "recipes"])
def test_list_registries(run_cli, what):
    proc = run_cli("list", what)
    assert proc.returncode == 0, proc.stderr
    assert {"objectives": "kd", "datasets": "fashion_mnist", "models": "mlp", "recipes": "kd_live"}[what] in proc.stdout


@pytest.mark.parametrize("command", ["demo", "demo-lm", "distill", "merge", "list"])
def test_help(run_cli, command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "Usage" in proc.stdout


def test_lm_recipes_are_dispatched_by_task(run_cli):
    proc = run_cli("distill", "lm_distill", "student.layerz=3")
    _assert_clean_error(proc, r"unknown key 'student\.layerz'\. Did you mean: layers")


def test_unknown_task(run_cli, tmp_path):
    proc = run_cli("distill", _recipe(tmp_path, task="translate"))
    _assert_clean_error(proc, r"unknown task 'translate'")


def test_distill_help_names_list_recipes(run_cli):
    proc = run_cli("distill", "--help", env={"COLUMNS": "200"})
    assert "transfuse list recipes" in proc.stdout


def test_folder_as_recipe(run_cli, tmp_path):
    proc = run_cli("distill", tmp_path)
    assert proc.returncode == 2 and "is a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_file_as_output_folder(run_cli, tmp_path):
    file = tmp_path / "taken.txt"
    file.write_text("mine")
    proc = run_cli("distill", "kd", f"output={file}")
    assert proc.returncode == 2 and "is a file" in proc.stderr and "Traceback" not in proc.stderr
    assert file.read_text() == "mine"


def test_demo_takes_key_value_like_the_other_commands(run_cli, monkeypatch):
    _assert_clean_error(run_cli("demo", "outptu=x"), r"demo takes output=DIR, seed=N and epochs=N; got 'outptu=x'")
    _assert_clean_error(run_cli("demo", "seed=one"), r"demo seed must be a whole number; got 'one'")
    from typer.testing import CliRunner

    import transfuse.recipes.demo as demo
    from transfuse.cli import app

    seen = {}
    monkeypatch.setattr(demo, "main", lambda **kw: seen.update(kw))
    assert CliRunner().invoke(app, ["demo", "output=runs/x", "seed=3", "epochs=1"]).exit_code == 0
    assert seen == {"output": Path("runs/x"), "seed": 3, "epochs": 1}
