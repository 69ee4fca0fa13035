"""train.seed fixes the whole run: initial weights, data order and objective modules."""
import torch
import yaml
from safetensors.torch import load_file

from transfuse.recipes.distill import CONFIGS, main


def _recipe(tmp_path, out):
    cfg = yaml.safe_load((CONFIGS / "ce.yaml").read_text())
    cfg["data"]["params"].update({"train_size": 400, "test_size": 100, "labelled": 200})
    cfg["train"] = {"epochs": 1, "seed": 3, "progress": False}
    cfg["output"] = str(tmp_path / out)
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_one_recipe_twice_gives_identical_weights(tmp_path):
    torch.manual_seed(123)  # whatever the process drew before must not matter
    main(_recipe(tmp_path, "a"), [])
    torch.rand(17)  # and the global generator has moved on between the runs
    main(_recipe(tmp_path, "b"), [])
    a, b = load_file(tmp_path / "a" / "student.safetensors"), load_file(tmp_path / "b" / "student.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_another_seed_gives_other_initial_weights(tmp_path):
    main(_recipe(tmp_path, "a"), [])
    main(_recipe(tmp_path, "b"), ["train.seed=4"])
    a, b = load_file(tmp_path / "a" / "student.safetensors"), load_file(tmp_path / "b" / "student.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
