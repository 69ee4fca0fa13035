"""Issue 14 item 5: every run's report has the teacher's and the student's rows, a delta against a named
baseline run, reliability bins with their counts, and says so when there is no test split."""
import json

import pytest

from transfuse.errors import TransfuseError
from transfuse.recipes.distill import main


def _report(folder):
    return json.loads((folder / "report" / "metrics.json").read_text()), (folder / "report" / "report.md").read_text()


def test_teacher_student_rows_delta_and_bin_counts(tabular, tmp_path):
    _, recipe = tabular
    main(recipe(output=str(tmp_path / "base"), objective__name="ce", teacher=None), [])
    main(recipe(name="kd.yaml", eval__compare_to=str(tmp_path / "base")), [])
    metrics, md = _report(tmp_path / "out")
    rows = {r["run"]: r for r in metrics["rows"]}
    assert list(rows)[:2] == ["student", "teacher"]
    assert {"accuracy", "ece", "nll", "parameters"} <= set(rows["teacher"])
    assert 0 <= rows["student"]["agreement"] <= 1
    base, _ = _report(tmp_path / "base")
    base_student = base["rows"][0]
    baseline = rows[f"baseline ({tmp_path / 'base'})"]
    assert baseline["accuracy"] == base_student["accuracy"]
    delta = rows["student - baseline"]
    assert delta["accuracy"] == pytest.approx(rows["student"]["accuracy"] - base_student["accuracy"])
    assert delta["ece"] == pytest.approx(rows["student"]["ece"] - base_student["ece"])
    assert "agreement" not in delta  # the ce baseline had no teacher to agree with
    test_size = 40  # 160 samples, test_fraction 0.25
    for run in ("student", "teacher"):
        assert sum(metrics["reliability"][run]["count"]) == test_size
    assert "## Reliability bins" in md and "**teacher** (40 samples)" in md and "| confidence bin | count |" in md


def test_compare_to_a_folder_without_report_fails_before_training(tabular, tmp_path):
    _, recipe = tabular
    with pytest.raises(TransfuseError, match="holds no report/metrics.json"):
        main(recipe(eval__compare_to=str(tmp_path)), [])
    assert not (tmp_path / "out").exists()


def test_no_test_split_is_said_in_log_and_report(tabular, capsys, tmp_path):
    _, recipe = tabular
    main(recipe(data__params__test_fraction=0.0), [])
    err = capsys.readouterr().err
    assert "has no test split" in err and "data.params.test_fraction" in err
    metrics, md = _report(tmp_path / "out")
    assert "## Notes" in md and "data.params.test_fraction=0.2" in md
    assert metrics["notes"] and "no test split" in metrics["notes"][0]
