"""Issue 14 item 7: user code by dotted path without PYTHONPATH; help and parameter listings from the signatures."""
import inspect
import os
import textwrap

import pytest
from typer.testing import CliRunner

from transfuse.cli import app
from transfuse.errors import TransfuseError
from transfuse.recipes.distill import DistillConfig, main

STUDENT = textwrap.dedent('''
    from torch import nn
    import helper_i14  # a neighbour module: the folder is importable, not just this file

    def tiny(*, in_shape, num_classes, width=8):
        return nn.Sequential(nn.Flatten(), nn.Linear(helper_i14.size(in_shape), width), nn.ReLU(), nn.Linear(width, num_classes))
''')


def test_student_module_next_to_the_recipe_and_objective_in_the_working_directory(tabular, tmp_path, monkeypatch):
    _, recipe = tabular
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "students_i14.py").write_text(STUDENT)
    (folder / "helper_i14.py").write_text("import math\n\ndef size(shape):\n    return math.prod(shape)\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "losses_i14.py").write_text("from transfuse.objectives.kd import KnowledgeDistillation\n\nclass MyKD(KnowledgeDistillation):\n    pass\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    r = recipe(name="project/r.yaml", student__name="students_i14.tiny", student__params={"width": 4},
               objective__name="losses_i14.MyKD", train__epochs=1)
    metrics = main(r, [])
    assert metrics["parameters"] == 6 * 4 + 4 + 4 * 2 + 2


def test_missing_module_says_where_it_looked(tabular, tmp_path, monkeypatch):
    _, recipe = tabular
    monkeypatch.chdir(tmp_path)
    r = recipe(student__name="nowhere_i14.Net")
    with pytest.raises(TransfuseError, match=f"no module 'nowhere_i14' on sys.path nor in {tmp_path}"):
        main(r, [])
    (tmp_path / "broken_i14.py").write_text("import not_installed_pkg_i14\n")
    with pytest.raises(TransfuseError, match="failed inside your module: No module named 'not_installed_pkg_i14'"):
        main(recipe(student__name="broken_i14.Net"), [])
    (tmp_path / "empty_i14.py").write_text("")
    with pytest.raises(TransfuseError, match="has no 'Net'"):
        main(recipe(student__name="empty_i14.Net"), [])


def test_distill_help_names_list_recipes():
    result = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert "transfuse list recipes" in result.output


def test_every_recipe_key_and_each_parameter_is_listed_from_the_code():
    from transfuse.explain import config_keys, find, parameters

    keys = {r["key"] for r in config_keys(DistillConfig)}
    for section, spec in DistillConfig.model_fields.items():
        assert section in keys
        sub = getattr(spec.annotation, "model_fields", None) or {}
        assert {f"{section}.{k}" for k in sub} <= keys
    assert {"eval.compare_to", "train.stall_steps", "data.batch_size", "optim.lr"} <= keys
    from transfuse.data import datasets

    for name in datasets.names():
        rows = parameters(datasets.get(name))
        assert [r["parameter"] for r in rows] == list(inspect.signature(datasets.get(name)).parameters)
    (tensors,) = find("tensors")
    standardize = next(r for r in tensors["rows"] if r["parameter"] == "standardize")
    assert "per_feature" in standardize["type"] and standardize["description"].startswith("per_feature (default)")
    mlp = [r["parameter"] for r in find("mlp")[0]["rows"]]
    assert "in_shape" not in mlp and "hidden" in mlp  # the data fills in_shape / num_classes


def test_cli_list_verbose_and_explain():
    runner = CliRunner()
    out = runner.invoke(app, ["list", "objectives", "--verbose"], terminal_width=300).output
    assert "temperature=4.0" in out
    out = runner.invoke(app, ["list", "recipes", "--verbose"], terminal_width=300).output
    assert "eval.compare_to" in out and "kd_live" in out
    out = runner.invoke(app, ["explain", "kd"], terminal_width=300).output
    assert "label_smoothing" in out and "objective" in out


def test_continual_recipe_finds_a_student_module_next_to_it(tmp_path, monkeypatch):
    """Every recipe runner (distill, continual, federate, fuse) resolves dotted paths from the recipe's folder."""
    from transfuse.recipes.continual import main as continual_main

    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "cl_students_i14.py").write_text(STUDENT.replace("helper_i14", "cl_helper_i14"))
    (folder / "cl_helper_i14.py").write_text("import math\n\ndef size(shape):\n    return math.prod(shape)\n")
    (folder / "r.yaml").write_text(textwrap.dedent(f'''
        stream: {{scenario: class, dataset: fashion_mnist, tasks: 2, train_per_task: 64, test_per_task: 32}}
        methods: [finetune]
        model: {{name: cl_students_i14.tiny, params: {{width: 4}}}}
        train: {{epochs: 1, batch_size: 32, lr: 0.001}}
        seeds: [0]
        output: {tmp_path / "out"}
    '''))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    summary = continual_main(str(folder / "r.yaml"), [])
    assert (tmp_path / "out" / "report.md").is_file() and summary["stream"]["tasks"] == 2
