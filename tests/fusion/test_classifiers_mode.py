"""`mode: classifiers`: several classifiers fused by rules on a registry data set's test split."""
import json

import pytest
import torch
from safetensors.torch import save_file

from transfuse.data import build_data
from transfuse.errors import TransfuseError
from transfuse.models import build_model


def _trained_mlp(hidden, seed, data, steps=60):
    torch.manual_seed(seed)
    model = build_model("mlp", {"hidden": hidden}, in_shape=data.in_shape, num_classes=data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data.train.inputs, data.train.labels
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clf")
    data = build_data("digits", {"seed": 0})
    a, b = _trained_mlp([16], 0, data), _trained_mlp([4], 1, data, steps=10)
    save_file(a.state_dict(), str(tmp / "a.safetensors"))
    run = tmp / "run_b"  # what `transfuse distill` leaves behind
    run.mkdir()
    save_file(b.state_dict(), str(run / "student.safetensors"))
    (run / "run_config.json").write_text(json.dumps({"student": {"name": "mlp", "params": {"hidden": [4]}}}))
    return tmp, data, a, b


def _config(tmp, **extra):
    return {
        "mode": "classifiers",
        "models": [{"name": "mlp", "params": {"hidden": [16]}, "weights": str(tmp / "a.safetensors"), "label": "a"},
                   {"run": str(tmp / "run_b"), "label": "b"}],
        "rule": ["mean", "product", {"name": "dempster_shafer", "strength": 10}],
        "data": {"name": "digits", "params": {"seed": 0}},
        "output": str(tmp / "out"),
        **extra,
    }


def test_per_model_and_fused_accuracy_and_ece_match_the_formulas(setup):
    from transfuse.eval.metrics import expected_calibration_error
    from transfuse.fusion.modes.classifiers import run

    tmp, data, a, b = setup
    report = run(_config(tmp, weights=[3.0, 1.0], overwrite=True))
    rows = {r["run"]: r for r in report["rows"]}
    assert set(rows) == {"a", "b", "fused:mean", "fused:product", "fused:dempster_shafer(strength=10)"}
    x, y = data.test.inputs, data.test.labels
    with torch.no_grad():
        pa, pb = a(x).softmax(-1), b(x).softmax(-1)
    assert rows["a"]["accuracy"] == pytest.approx(float((pa.argmax(-1) == y).float().mean()))
    mean = 0.75 * pa + 0.25 * pb
    assert rows["fused:mean"]["accuracy"] == pytest.approx(float((mean.argmax(-1) == y).float().mean()))
    assert rows["fused:mean"]["ece"] == pytest.approx(expected_calibration_error(mean, y), abs=1e-5)
    assert rows["fused:mean"]["nll"] == pytest.approx(float(-mean.log().gather(1, y[:, None]).mean()), rel=1e-4)
    assert report["best_single"] == "a" and rows["a"]["accuracy"] > rows["b"]["accuracy"]
    written = json.loads((tmp / "out" / "metrics.json").read_text())
    assert [r["run"] for r in written["rows"]] == [r["run"] for r in report["rows"]]
    assert "fused:dempster_shafer" in (tmp / "out" / "report.md").read_text()


def test_bad_recipes_fail_before_any_work_and_output_is_kept(setup):
    from transfuse.fusion.modes.classifiers import run

    tmp, *_ = setup
    (tmp / "keep").mkdir(exist_ok=True)
    (tmp / "keep" / "metrics.json").write_text("{}")
    with pytest.raises(TransfuseError, match="already holds a report"):
        run(_config(tmp, output=str(tmp / "keep")))
    assert (tmp / "keep" / "metrics.json").read_text() == "{}"
    with pytest.raises(TransfuseError, match="1 weights were given for 2 models"):
        run(_config(tmp, weights=[1.0], output=str(tmp / "o2")))
    with pytest.raises(TransfuseError, match="unknown fusion-rule 'avg'"):
        run(_config(tmp, rule="avg", output=str(tmp / "o2")))
    with pytest.raises(TransfuseError, match="not a finished distill run"):
        run({**_config(tmp, output=str(tmp / "o2")), "models": [{"run": str(tmp)}]})
    with pytest.raises(TransfuseError, match="either name"):
        run({**_config(tmp, output=str(tmp / "o2")), "models": [{"params": {}}]})
    with pytest.raises(TransfuseError, match="unknown key 'model'"):
        run({**_config(tmp, output=str(tmp / "o2")), "model": []})
    assert not (tmp / "o2").exists()


@pytest.mark.slow
def test_through_the_cli(setup, run_cli):
    import yaml

    tmp, *_ = setup
    cfg = _config(tmp, output=str(tmp / "cli"), rule="logit_mean")
    (tmp / "clf.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_cli("fuse", tmp / "clf.yaml", "weights=[1,2]")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp / "cli" / "metrics.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["a", "b", "fused:logit_mean"]
