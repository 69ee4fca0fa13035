"""The federate report: results.json (every round of every run), report.md (final accuracies,
bytes), accuracy.png (global and mean local accuracy vs rounds, one line per method); written
into a temporary sibling folder that then replaces the target (eval.report.atomic_folder)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping

from ..eval.report import _plain, atomic_folder, markdown_table


def summary_rows(summary: Mapping[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for label, m in summary["methods"].items():
        row: Dict[str, Any] = {"method": label}
        for key, v in m["final"].items():
            sd = m["final_std"][key]
            row[key] = f"{v:.3f} ± {sd:.3f}" if m["seeds"] > 1 else f"{v:.3f}"
        row["MB"] = f"{m['bytes'] / 1e6:.1f}"
        row["seeds"] = m["seeds"]
        row["seconds"] = f"{m['seconds']:.1f}"
        rows.append(row)
    return rows


def plot_accuracy(path: Path, summary: Mapping[str, Any], title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in ("global_acc", "mean_local_acc", "target_acc") if any(k in m["curves"] for m in summary["methods"].values())]
    fig = Figure(figsize=(4.2 * len(keys), 3.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for colour, (label, m) in enumerate(summary["methods"].items()):
            if key not in m["curves"]:
                continue
            ys = m["curves"][key]["mean"]
            ax.plot(range(1, len(ys) + 1), ys, color=f"C{colour % 10}", marker="o" if len(ys) <= 30 else None, markersize=3, label=label)
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy")
        ax.set_title(key.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def write_federate_report(folder: Path, summary: Mapping[str, Any]) -> Path:
    cfg = summary["config"]
    split = cfg["split"]
    how = f"alpha={split['alpha']}" if split["kind"] == "dirichlet" else split["kind"]
    title = f"federate: {cfg['data']['name']}, {cfg['clients']} clients ({how}), {cfg['rounds']} rounds"
    with atomic_folder(Path(folder)) as tmp:
        plot_accuracy(tmp / "accuracy.png", summary, title)
        md = [f"# {title}", "", markdown_table(summary_rows(summary)), "", "![accuracy vs rounds](accuracy.png)", ""]
        (tmp / "report.md").write_text("\n".join(md))
        (tmp / "results.json").write_text(json.dumps(_plain(summary), indent=1, allow_nan=True))
    return Path(folder)
