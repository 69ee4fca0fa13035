"""The shipped adv_train / mtard / metadmoe recipes run (on digits, small), and eval.adversarial reaches the report."""
import json

import pytest

from transfuse.data import build_data
from transfuse.recipes.distill import main

EPOCHS = 8  # digits: 22 steps an epoch, a few seconds in all
DIGITS = ["data.name=digits", "data.params={seed: 0}", "data.batch_size=64", "eval.latency=false", "train.progress=false"]
ATTACK = ["eval.adversarial={attack: pgd, eps: 0.2, steps: 10, limit: null}", "objective.params.eps=0.2"]


def _metrics(folder):
    return json.loads((folder / "report" / "metrics.json").read_text())["rows"][0]


pytestmark = pytest.mark.slow  # end-to-end recipe runs (small under TRANSFUSE_CI_SMALL=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A plainly trained and an adversarially trained MLP on digits (the two teachers of mtard)."""
    root = tmp_path_factory.mktemp("robust")
    main("ce", DIGITS + ATTACK[:1] + [f"train.epochs={EPOCHS}", f"output={root / 'ce'}"])
    main("adv_train", DIGITS + ATTACK + [f"train.epochs={EPOCHS}", f"output={root / 'adv'}", "student.params={hidden: [64]}"])
    return root


def test_an_undefended_model_is_less_accurate_under_attack_and_the_report_says_so(trained):
    m = _metrics(trained / "ce")
    assert m["attack"] == "pgd10" and m["attacked"] == len(build_data("digits", {"seed": 0}).test)  # limit: null = all
    assert m["robust_accuracy"] < m["accuracy"] - 0.2, m
    assert "robust_accuracy" in (trained / "ce" / "report" / "report.md").read_text()


def test_fgsm_is_weaker_than_pgd(trained):
    from transfuse.eval import attack_budget, input_range, robust_accuracy
    from transfuse.data import build_data
    from transfuse.models import build_model
    from transfuse.recipes.distill import load_weights

    data = build_data("digits", {"seed": 0})
    model = load_weights(build_model("mlp", {"hidden": [64]}, in_shape=data.in_shape, num_classes=10), str(trained / "ce" / "student.safetensors"), what="m")
    bounds = input_range(data.train.inputs)
    eps = attack_budget(0.2, bounds)
    fgsm = robust_accuracy(model, data.test, attack="fgsm", eps=eps, bounds=bounds)["robust_accuracy"]
    pgd = robust_accuracy(model, data.test, attack="pgd", eps=eps, steps=10, bounds=bounds)["robust_accuracy"]
    assert pgd <= fgsm


def test_adversarial_training_is_more_robust_than_plain_training(trained):
    plain, adv = _metrics(trained / "ce"), _metrics(trained / "adv")
    assert adv["robust_accuracy"] > plain["robust_accuracy"] + 0.1, (plain, adv)


def test_mtard_recipe_runs_with_its_two_teachers(trained):
    out = trained / "mtard"
    teachers = (f"teacher.ensemble=[{{name: mlp, params: {{hidden: [64]}}, weights: {trained / 'ce' / 'student.safetensors'}, cache: false}},"
                f" {{name: mlp, params: {{hidden: [64]}}, weights: {trained / 'adv' / 'student.safetensors'}, cache: false}}]")
    metrics = main("mtard", DIGITS + ATTACK + [teachers, f"train.epochs={EPOCHS}", f"output={out}", "student.params={hidden: [32]}"])
    assert 0 < metrics["robust_accuracy"] <= 1 and metrics["accuracy"] > 0.5
    assert _metrics(trained / "ce")["robust_accuracy"] < metrics["robust_accuracy"]  # the robust teacher's share shows


def test_metadmoe_recipe_runs_from_experts_to_test_time_adaptation(tmp_path):
    data = ["data.params={base: digits, base_params: {seed: 0}, train: [{rotate: 0}, {rotate: 40}], test: {rotate: 80}}",
            "data.batch_size=32", "eval.latency=false", "train.progress=false", "train.epochs=3"]
    experts = []
    for d in range(2):
        main("metadmoe_expert", data[:1] + [f"data.params.domain={d}"] + data[1:] + [f"output={tmp_path / f'e{d}'}", "student.params={hidden: [32]}"])
        experts.append(f"{{name: mlp, params: {{hidden: [32]}}, weights: {tmp_path / f'e{d}' / 'student.safetensors'}, cache: false}}")
    metrics = main("metadmoe", data + [f"teacher.ensemble=[{', '.join(experts)}]", f"output={tmp_path / 'm'}", "student.params={hidden: [16]}"])
    assert {"accuracy", "tta_accuracy", "aggregator_accuracy"} <= set(metrics)
    assert "tta_accuracy" in (tmp_path / "m" / "report" / "report.md").read_text()


@pytest.mark.parametrize("args, pattern", [
    (["mtard", "teacher.ensemble=[{name: mlp, cache: false}]"], "give teacher.ensemble with exactly 2 members, each with cache: false"),
    (["adv_train", "objective.params.eps=-1"], "eps"),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, args, pattern):
    from tests.test_cli import _assert_clean_error

    proc = run_cli("distill", *args, f"output={tmp_path / 'out'}", "data.name=digits", "data.params={seed: 0}")
    _assert_clean_error(proc, pattern, tmp_path)


def test_attacks_refuse_token_ids():
    import torch

    from transfuse.errors import TransfuseError
    from transfuse.eval import input_range

    with pytest.raises(TransfuseError, match="continuous inputs"):
        input_range(torch.tensor([[1, 2, 3]]))
