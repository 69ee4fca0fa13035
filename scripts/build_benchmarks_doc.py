"""Assemble docs/BENCHMARKS.md from the per-area pages in docs/benchmarks/ (run after updating one).

usage: python scripts/build_benchmarks_doc.py
"""
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
ORDER = ["foundation", "distill_speed", "data_eval", "objectives", "text", "lm", "merge", "merge_compat", "peer_conventions", "fusion", "fusion_ensembles", "fusion_upscaling", "continual", "online", "robust", "federate"]

HEADER = """# Benchmarks

Every number here comes from a script in `benchmarks/`; each section gives the command that
reproduces it and says where the measurement is weak, including where a peer wins. Speed and
memory are ratios measured in one run. Unless a section says otherwise, runs were on this
project's 2-core machines while other jobs shared them (load average 6-12), so absolute times are
noisy; the clean timings say where they were taken (2 pinned cores or the lent GPU machine).
This page is assembled from `docs/benchmarks/*.md` by `python scripts/build_benchmarks_doc.py`.

"""


def demote(text: str) -> str:
    """Make every heading one level deeper so each page becomes a section (code blocks untouched)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"^#{1,5} ", line):
            line = "#" + line
        out.append(line)
    return "\n".join(out)


def main() -> None:
    pages = [DOCS / "benchmarks" / f"{name}.md" for name in ORDER]
    pages += sorted(p for p in (DOCS / "benchmarks").glob("*.md") if p.stem not in ORDER)
    body = []
    for page in pages:
        if page.exists():
            text = page.read_text().strip()
            body.append(demote(text) if text.startswith("# ") else text)
    out = DOCS / "BENCHMARKS.md"
    out.write_text(HEADER + "\n\n".join(body) + "\n")
    print(f"wrote {out} from {len(body)} pages")


if __name__ == "__main__":
    main()
