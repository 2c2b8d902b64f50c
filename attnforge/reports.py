"""Writing figures: every report is a Markdown page plus a JSON twin in ``build/reports/``."""

import json

from .paths import REPORTS

__all__ = ["write_report", "md_table"]


def write_report(name, markdown, data):
    """Write ``build/reports/<name>.md`` and ``<name>.json``; returns the Markdown path."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{name}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    path = REPORTS / f"{name}.md"
    path.write_text(markdown.rstrip() + "\n")
    return path


def md_table(header, rows):
    """A Markdown table from a header list and rows of cells (numbers formatted sensibly)."""
    def cell(x):
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
        if isinstance(x, int):
            return f"{x:,}"
        return str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)
