import json

import pytest
import torch

from transfuse.errors import TransfuseError
from transfuse.eval import write_report
from transfuse.eval import report as report_module


def _inputs():
    g = torch.Generator().manual_seed(0)
    rows = [
        {"run": "teacher", "accuracy": 0.912, "ece": 0.021, "parameters": 421642, "ms_per_1000": 123.456},
        {"run": "student (kd)", "accuracy": 0.85, "ece": 0.05, "agreement": 0.9, "parameters": 25450, "note": float("nan")},
    ]
    curves = {
        "no teacher": [{"epoch": e, "train_loss": 1 / e, "test_accuracy": 0.7 + 0.02 * e} for e in range(1, 6)],
        "kd": [{"epoch": e, "train_loss": 1.2 / e, "train_accuracy": 0.6 + 0.03 * e, "test_accuracy": 0.72 + 0.02 * e} for e in range(1, 6)],
    }
    probs = torch.softmax(torch.randn(300, 10, generator=g) * 3, dim=-1)
    labels = torch.randint(0, 10, (300,), generator=g)
    reliability = {"teacher": (probs, labels), "student (kd)": (probs.flip(0), labels)}
    return rows, curves, reliability


def test_files_exist_and_parse(tmp_path):
    rows, curves, reliability = _inputs()
    out = write_report(tmp_path / "report", rows, curves, reliability, "demo")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["learning_curves.png", "metrics.json", "reliability.png", "report.md"]
    for png in ("learning_curves.png", "reliability.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["title"] == "demo" and metrics["rows"][0]["parameters"] == 421642
    assert metrics["rows"][1]["note"] is None  # NaN is not valid JSON
    assert sum(metrics["reliability"]["teacher"]["count"]) == 300
    assert len(metrics["curves"]["kd"]) == 5
    md = (out / "report.md").read_text().splitlines()
    assert md[0] == "# demo"
    assert md[2] == "| run | accuracy | ece | parameters | ms_per_1000 | agreement | note |"
    assert md[4] == "| teacher | 0.9120 | 0.0210 | 421,642 | 123.5 | - | - |"
    assert "![reliability](reliability.png)" in md
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_replaces_a_previous_report_only_when_complete(tmp_path, monkeypatch):
    rows, curves, reliability = _inputs()
    target = tmp_path / "report"
    write_report(target, rows[:1], curves, reliability, "first")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "_plot_reliability", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(target, rows, curves, reliability, "second")
    assert json.loads((target / "metrics.json").read_text())["title"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    monkeypatch.undo()
    write_report(target, rows, {}, {}, "second")
    assert json.loads((target / "metrics.json").read_text())["title"] == "second"
    assert sorted(p.name for p in target.iterdir()) == ["metrics.json", "report.md"]  # nothing to plot


def test_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(TransfuseError, match="is not a transfuse report"):
        write_report(mine, [{"a": 1}], {}, {}, "t")
    assert (mine / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(TransfuseError, match="is a file"):
        write_report(tmp_path / "file", [{"a": 1}], {}, {}, "t")
