"""`transfuse distill` and `transfuse demo` end to end (small sizes; CI sets TRANSFUSE_CI_SMALL=1)."""
import json
import os

import pytest
import yaml
from safetensors.torch import load_file

from transfuse.recipes.distill import CONFIGS

CI_SMALL = os.environ.get("TRANSFUSE_CI_SMALL") == "1"


def _small_recipe(tmp_path, name="kd", **extra):
    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    cfg["data"]["params"].update({"train_size": 1200, "test_size": 300, "labelled": 300})
    cfg["train"] = {**cfg.get("train", {}), "epochs": 2, "log_every": 5}
    cfg["output"] = str(tmp_path / "out")
    if "teacher" in cfg:
        cfg["teacher"]["cache_dir"] = str(tmp_path / "cache")
    cfg.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_distill_recipe_writes_student_report_and_metrics(run_cli, tmp_path):
    proc = run_cli("distill", _small_recipe(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    state = load_file(out / "student.safetensors")
    assert any(k.endswith("weight") for k in state)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    row = metrics["rows"][0]
    assert 0.3 < row["accuracy"] <= 1.0  # 10 classes: well above chance after 2 epochs
    assert {"ece", "agreement", "kl_to_teacher", "parameters", "latency_ms_per_1000"} <= set(row)
    for f in ("report.md", "learning_curves.png", "reliability.png"):
        assert (out / "report" / f).exists()
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in l for l in lines) and any("test_accuracy" in l for l in lines)
    # the teacher cache was written once and is reused by a second run
    caches = list((tmp_path / "cache").glob("teacher-*.safetensors"))
    assert len(caches) == 1
    mtime = caches[0].stat().st_mtime_ns
    proc2 = run_cli("distill", tmp_path / "kd.yaml", f"output={tmp_path / 'out2'}")
    assert proc2.returncode == 0, proc2.stderr
    assert caches[0].stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_bf16_mixed_precision_and_accumulation_run(run_cli, tmp_path):
    proc = run_cli("distill", _small_recipe(tmp_path, name="combined"), "train.mixed_precision=bf16", "train.grad_accum=2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "student.safetensors").exists()


@pytest.mark.slow
def test_demo_small(run_cli, tmp_path):
    proc = run_cli("demo", "--output", tmp_path / "demo", env={"TRANSFUSE_CI_SMALL": "1", "TRANSFUSE_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    names = [r["model"] for r in metrics["rows"]]
    assert names == ["teacher (CNN)", "student, no teacher", "student, kd"]
    assert "agreement w/ teacher" in proc.stdout
    for f in ("report.md", "learning_curves.png", "reliability.png"):
        assert (tmp_path / "demo" / f).exists()
