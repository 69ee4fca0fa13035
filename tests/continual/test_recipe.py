"""`transfuse continual`: the recipe end to end on a tiny stream, its report, and its errors."""
import json

import numpy as np
import pytest

from transfuse.continual.compare import compare
from transfuse.errors import TransfuseError

TINY = ["stream.dataset=digits", "stream.scenario=task", "stream.tasks=2", "stream.train_per_task=80",
        "stream.test_per_task=40", "methods=[finetune,er]", "model.params.hidden=[16]", "train.epochs=1"]


def test_cli_runs_a_stream_and_writes_the_report(run_cli, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("continual", "continual_split_fmnist", *TINY, "seeds=[0,1]", f"output={out}")
    assert proc.returncode == 0, proc.stderr
    assert {"report.md", "results.json", "matrices.png", "timeline.png"} <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"finetune", "er"}
    fine = results["methods"]["finetune"]
    runs = results["runs"]["finetune"]
    assert len(runs) == 2 and np.asarray(fine["R"]).shape == (2, 2)
    # the summary is the mean over the seeds' runs
    assert fine["mean"]["acc"] == pytest.approx(np.mean([r["metrics"]["acc"] for r in runs]))
    assert np.allclose(fine["R"], np.mean([r["R"] for r in runs], axis=0))
    assert "| finetune |" in (out / "report.md").read_text()
    # a finished report is not overwritten without overwrite=true
    again = run_cli("continual", "continual_split_fmnist", *TINY, f"output={out}")
    assert again.returncode == 2 and "overwrite=true" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize(
    "override, message",
    [("stream.taskz=3", "unknown stream key 'taskz'"), ("methods=[finetun]", "finetun"),
     ("stream.seed=3", "seeds="), ("stream.scenario=nope", "unknown scenario")],
)
def test_bad_recipes_are_one_line_errors(run_cli, tmp_path, override, message):
    proc = run_cli("continual", "continual_split_fmnist", *TINY, override, f"output={tmp_path / 'o'}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert not (tmp_path / "o").exists()


def test_compare_labels_must_differ():
    with pytest.raises(TransfuseError, match="share a label"):
        compare({"dataset": "digits", "tasks": 2}, ["er", {"name": "er", "params": {"buffer": 50}}])
