"""The variant comparison: a CSV, a markdown table and a chart of quality (accuracy, or R2 for regression)
against gzipped size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkflow.core.selection import pareto_front
from shrinkflow.core.tables import markdown_table
from shrinkflow.core.summary import SummaryRow


def write_comparison(rows: Sequence[SummaryRow], out_dir: str | Path) -> list[Path]:
    """Write comparison.csv, comparison.md and pareto.png for the summary rows; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = [row.display() for row in rows]  # failed rows leave their metric cells empty
    csv_path, md_path, png_path = out_dir / "comparison.csv", out_dir / "comparison.md", out_dir / "pareto.png"
    pd.DataFrame(cells).to_csv(csv_path, index=False)
    headers = list(cells[0]) if cells else []
    md_path.write_text(markdown_table(headers, [[row[header] for header in headers] for row in cells]))
    plot_pareto(rows, png_path)
    return [csv_path, md_path, png_path]


def plot_pareto(rows: Sequence[SummaryRow], png_path: str | Path) -> None:
    """Accuracy (R2 for regression) against gzipped size (log scale), the Pareto front joined and the shipped
    variant ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row for row in rows if row.ok]
    quality = "accuracy" if any(row.accuracy is not None for row in measured) else "r2"
    points = {row.variant: (float(row.gzip_size_bytes or 0), float(getattr(row, quality) or 0)) for row in measured}
    front = sorted(pareto_front(points), key=lambda name: points[name][0])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (size, accuracy) in points.items():
        on_front = name in front
        ax.scatter(size, accuracy, color="tab:red" if on_front else "tab:gray", zorder=3)
        ax.annotate(name, (size, accuracy), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if front:
        ax.plot([points[n][0] for n in front], [points[n][1] for n in front], color="tab:red", label="Pareto front")
    for row in measured:
        if row.selected:
            size, accuracy = points[row.variant]
            ax.scatter(size, accuracy, s=220, facecolors="none", edgecolors="tab:blue", linewidths=2, label="selected")
    ax.set_xscale("log")
    ax.set_xlabel("gzipped model size (bytes, log scale)")
    ax.set_ylabel(f"test {quality}")
    ax.set_title(f"Variants: {quality} against size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
