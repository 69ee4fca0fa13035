"""The continual report: metrics table (Markdown + JSON), accuracy-matrix heat-maps, accuracy over time.

Written like every transfuse report (eval/report.py): into a temporary sibling folder that then
replaces the target, so a report is never half-written; plots on matplotlib's Agg canvas.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from ..eval.report import _plain, atomic_folder, markdown_table

# the columns of the summary table, in order (the full set is in results.json)
TABLE_METRICS = ("acc", "bwt", "fwt", "forgetting_max", "forgetting_last", "libero_auc")


def metrics_rows(summary: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One row per method: each of TABLE_METRICS as ``mean ± std`` (std over seeds)."""
    rows = []
    for label, s in summary["methods"].items():
        row: Dict[str, Any] = {"method": label}
        for k in TABLE_METRICS:
            if k in s["mean"]:
                row[k] = f"{s['mean'][k]:.3f} ± {s['std'][k]:.3f}" if s["seeds"] > 1 else f"{s['mean'][k]:.3f}"
        row["seeds"] = s["seeds"]
        row["seconds"] = f"{s['seconds']:.1f}"
        rows.append(row)
    return rows


def _grid(summary: Mapping[str, Any], width: float, height: float):
    """A figure with one panel per method (at most 4 a row): (figure, [(label, axes), ...])."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(summary["methods"])
    cols = min(len(labels), 4)
    rows = (len(labels) + cols - 1) // cols
    fig = Figure(figsize=(width * cols, height * rows + 0.4), dpi=110)
    FigureCanvasAgg(fig)
    return fig, [(label, fig.add_subplot(rows, cols, n + 1)) for n, label in enumerate(labels)]


def plot_matrices(path: Path, summary: Mapping[str, Any], title: str) -> None:
    """One heat-map per method of the mean R[i][j] (rows: after training task i; columns: task j)."""
    fig, panels = _grid(summary, 3.2, 3.0)
    for label, ax in panels:
        R = np.asarray(summary["methods"][label]["R"])  # (T, T)
        ax.imshow(R, vmin=0.0, vmax=1.0, cmap="viridis")
        T = len(R)
        for i in range(T):
            for j in range(T):
                ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if R[i, j] < 0.6 else "black")
        ax.set_title(label, fontsize=9)
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
        ax.set_xlabel("evaluated on task j", fontsize=8)
        ax.set_ylabel("after training task i", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def plot_timeline(path: Path, summary: Mapping[str, Any], title: str) -> None:
    """Per method, the accuracy on every task after every epoch of the run (mean over seeds)."""
    fig, panels = _grid(summary, 3.4, 2.6)
    for n, (label, ax) in enumerate(panels):
        timeline = np.asarray(summary["methods"][label]["timeline"])  # (E_total, T)
        if timeline.size:
            steps = np.arange(1, len(timeline) + 1)
            for j in range(timeline.shape[1]):
                ax.plot(steps, timeline[:, j], label=f"task {j}", linewidth=1.2)
            ax.axhline(float(timeline[-1].mean()), color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylim(0.0, 1.0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch of the run", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        if n == 0:
            ax.legend(fontsize=6, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def write_continual_report(folder: str | Path, summary: Mapping[str, Any], title: str) -> Path:
    """report.md, results.json (every run's R and metrics), matrices.png and timeline.png in ``folder``."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        plot_matrices(tmp / "matrices.png", summary, title)
        plot_timeline(tmp / "timeline.png", summary, title)
        stream = summary.get("stream", {})
        md = [f"# {title}", "", f"Stream: `{json.dumps(_plain(stream))}`", "",
              "Metrics (GEM's ACC/BWT/FWT, Chaudhry's forgetting, LIBERO's AUC); mean ± std over seeds; "
              "every metric of every run is in results.json.", "",
              markdown_table(metrics_rows(summary)), "",
              "![accuracy matrices](matrices.png)", "", "![accuracy over time](timeline.png)", ""]
        (tmp / "report.md").write_text("\n".join(md))
        (tmp / "metrics.json").write_text(json.dumps(_plain({"title": title, "rows": metrics_rows(summary)}), indent=2))
        (tmp / "results.json").write_text(json.dumps(_plain(summary), indent=2, allow_nan=False))
    return folder
