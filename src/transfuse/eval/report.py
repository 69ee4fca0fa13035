"""Reports: a Markdown table, metrics.json, learning curves and reliability diagrams, written atomically.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch), so writing a
report never opens a window nor changes a notebook's backend.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

from torch import Tensor

from ..errors import TransfuseError
from .metrics import expected_calibration_error, reliability_bins

_REPORT_FILES = ("report.md", "metrics.json")


def _plain(value: Any) -> Any:
    """A JSON-safe copy: tensors and numpy values become Python numbers/lists, NaN and inf become None."""
    if isinstance(value, Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    elif hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as a Markdown table; columns are the keys in order of first appearance."""
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _x(points: Sequence[Mapping[str, Any]]) -> List[float]:
    return [float(p.get("epoch", i + 1)) for i, p in enumerate(points)]


def _plot_curves(path: Path, curves: Mapping[str, Sequence[Mapping[str, Any]]], title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    from matplotlib.ticker import MaxNLocator

    for colour, (run, points) in enumerate(curves.items()):
        keys: List[str] = []
        for p in points:
            keys += [k for k in p if k not in keys]
        for key in keys:
            where = ax_loss if "loss" in key else ax_acc if "acc" in key else None
            if where is None:
                continue
            xs = [x for x, p in zip(_x(points), points) if isinstance(_plain(p.get(key)), (int, float))]
            ys = [float(_plain(p[key])) for p in points if isinstance(_plain(p.get(key)), (int, float))]
            if ys:
                where.plot(xs, ys, color=f"C{colour % 10}", linestyle="--" if key.startswith("train") else "-",
                           marker="o" if len(ys) <= 30 else None, markersize=3, label=f"{run}: {key}")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)


def _plot_reliability(path: Path, bins_by_run: Mapping[str, Dict[str, Any]], title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(bins_by_run)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 3.8 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, (run, b) in zip(axes, bins_by_run.items()):
        edges = b["edges"]
        width = edges[1] - edges[0]
        centres = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:])]
        used = [i for i, c in enumerate(b["count"]) if c > 0]
        ax.bar([centres[i] for i in used], [b["accuracy"][i] for i in used], width=width, edgecolor="black",
               linewidth=0.5, color="tab:blue", label="accuracy")
        ax.bar([centres[i] for i in used], [b["confidence"][i] - b["accuracy"][i] for i in used], width=width,
               bottom=[b["accuracy"][i] for i in used], color="tab:red", alpha=0.3, edgecolor="tab:red",
               linewidth=0.5, label="gap")
        for i in used:  # the samples behind each bar: a bar of 3 samples says little
            ax.text(centres[i], min(max(b["accuracy"][i], b["confidence"][i]) + 0.02, 0.97), str(b["count"][i]),
                    ha="center", va="bottom", fontsize=6, rotation=90 if len(used) > 8 else 0)
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ece = b.get("ece")
        ax.set_title(f"{run}" + (f"  ECE {ece:.3f}" if isinstance(ece, float) else ""), fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)


def _check_target(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise TransfuseError(f"report folder {str(folder)!r} is a file; choose another report folder")
    if folder.is_dir() and any(folder.iterdir()) and not any((folder / f).exists() for f in _REPORT_FILES):
        raise TransfuseError(
            f"{str(folder)!r} already exists and is not a transfuse report; choose another report folder"
        )


def write_report(
    folder: str | Path,
    rows: List[Dict[str, Any]],
    curves: Dict[str, List[Dict[str, Any]]],
    reliability: Dict[str, Tuple[Tensor, Tensor]],
    title: str,
    *,
    bins: int = 15,
    notes: Sequence[str] = (),
) -> Path:
    """Write report.md, metrics.json, learning_curves.png and reliability.png into ``folder``.

    rows: one dict per run (e.g. run, accuracy, ece, agreement, parameters); curves: run ->
    per-epoch records (keys with "loss" and "acc" are plotted); reliability: run -> (probs (N, C),
    labels (N,)), drawn with the sample count of each bin and listed per bin in report.md; notes:
    sentences the reader must see (no test split, a run that did not learn), under "Notes". A plot with nothing to show is left out. The files are written to a temporary
    sibling folder which then replaces ``folder``, so a report is never half-written; an existing
    folder is replaced only if it is empty or a previous report.
    """
    folder = Path(folder)
    bins_by_run = {}
    for run, (probs, labels) in reliability.items():
        b: Dict[str, Any] = reliability_bins(probs, labels, bins)
        b["ece"] = expected_calibration_error(probs, labels, bins)
        bins_by_run[run] = b
    with atomic_folder(folder) as tmp:
        files = []
        if any("loss" in k or "acc" in k for points in curves.values() for p in points for k in p):  # else an empty plot
            _plot_curves(tmp / "learning_curves.png", curves, title)
            files.append("learning_curves.png")
        if bins_by_run:
            _plot_reliability(tmp / "reliability.png", bins_by_run, title)
            files.append("reliability.png")
        md = [f"# {title}", "", markdown_table(rows) if rows else "(no runs)", ""]
        if notes:
            md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
        md += [f"![{f[:-4].replace('_', ' ')}]({f})\n" for f in files]
        md += _bin_tables(bins_by_run)
        (tmp / "report.md").write_text("\n".join(md))
        payload = {"title": title, "rows": rows, "curves": curves, "reliability": bins_by_run, "notes": list(notes)}
        (tmp / "metrics.json").write_text(json.dumps(_plain(payload), indent=2, allow_nan=False))
    return folder


def read_baseline(run: str | Path) -> Dict[str, Any]:
    """The student row of an earlier run's report (``RUN_DIR/report/metrics.json``, or that file itself)."""
    path = Path(run).expanduser()
    file = path if path.is_file() else path / "report" / "metrics.json"
    if not file.is_file():
        raise TransfuseError(
            f"eval.compare_to={str(run)!r} holds no report/metrics.json; name the output folder of a finished transfuse distill run"
        )
    try:
        rows = json.loads(file.read_text())["rows"]
    except (ValueError, KeyError, TypeError):
        raise TransfuseError(f"{str(file)!r} is not a transfuse report's metrics.json (no rows); name a finished run's folder") from None
    student = next((r for r in rows if isinstance(r, dict) and r.get("run") == "student"), rows[0] if rows else None)
    if not isinstance(student, dict):
        raise TransfuseError(f"{str(file)!r} has no student row to compare with")
    return student


def delta_row(current: Mapping[str, Any], baseline: Mapping[str, Any], label: str) -> Dict[str, Any]:
    """current - baseline for every number both rows have (booleans and the run name skipped)."""
    row: Dict[str, Any] = {"run": label}
    for key, value in current.items():
        other = baseline.get(key)
        if key != "run" and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, other)):
            row[key] = value - other
    return row


def _bin_tables(bins_by_run: Mapping[str, Dict[str, Any]]) -> List[str]:
    """Markdown lines: per run, the non-empty confidence bins with their counts, accuracy and confidence."""
    if not bins_by_run:
        return []
    md = ["## Reliability bins", ""]
    for run, b in bins_by_run.items():
        edges = b["edges"]
        rows = [{"confidence bin": f"({edges[i]:.2f}, {edges[i + 1]:.2f}]", "count": c, "accuracy": b["accuracy"][i],
                 "mean confidence": b["confidence"][i]} for i, c in enumerate(b["count"]) if c > 0]
        md += [f"**{run}** ({sum(b['count']):,} samples)", "", markdown_table(rows), ""]
    return md


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """A temporary sibling of ``folder`` to write a report into: on success it replaces ``folder``
    (which must be absent, empty or an earlier report), on any error it is removed."""
    _check_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
        _replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(tmp: Path, folder: Path) -> None:
    """Move ``tmp`` to ``folder``; an old ``folder`` is kept aside until the new one is in place."""
    if not folder.exists():
        os.rename(tmp, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    os.rmdir(old)
    os.rename(folder, old)
    try:
        os.rename(tmp, folder)
    except BaseException:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["write_report", "markdown_table", "atomic_folder", "read_baseline", "delta_row"]
