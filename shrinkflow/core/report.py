"""The variant comparison: a CSV, a markdown table and a chart of quality (accuracy, or R2 for regression)
against gzipped size."""

from __future__ import annotations

import math
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


def plot_pareto(rows: Sequence[SummaryRow], png_path: str | Path) -> list[str]:
    """Accuracy (R2 for regression) against gzipped size (log scale): the Pareto front joined and labelled, the
    shipped variant ringed and labelled, every other variant an unlabelled grey dot (a run has dozens). Returns the
    variants it labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row for row in rows if row.ok]
    quality = "accuracy" if any(row.accuracy is not None for row in measured) else "r2"
    points = {row.variant: (float(row.gzip_size_bytes or 0), float(getattr(row, quality) or 0)) for row in measured}
    front = sorted(pareto_front(points), key=lambda name: points[name][0])
    shipped = next((row.variant for row in measured if row.selected), None)
    fig, ax = plt.subplots(figsize=(10, 6))
    others = [point for name, point in points.items() if name not in front]
    if others:
        ax.scatter(
            [size for size, _ in others], [value for _, value in others], color="0.65", s=18, zorder=2,
            label=f"other variants ({len(others)})",
        )
    if front:
        ax.plot(
            [points[name][0] for name in front], [points[name][1] for name in front], "o-", color="tab:red", zorder=3,
            label="Pareto front",
        )
    if shipped is not None:
        size, value = points[shipped]
        ax.scatter(size, value, s=260, facecolors="none", edgecolors="tab:blue", linewidths=2, zorder=4, label="shipped")
    size_axis(ax, [size for size, _ in points.values()])
    ax.set_xlabel("gzipped model size (log scale)")
    ax.set_ylabel(f"test {quality}")
    ax.set_title(f"Variants: {quality} against size")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    labelled = front + ([shipped] if shipped is not None and shipped not in front else [])
    label_points(ax, [(name, points[name]) for name in labelled], bold=shipped)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return labelled


# Where a point's label may go, in order of preference: (x, y) offset in points from the point, and the label's
# horizontal alignment (right of the point, or left of it).
LABEL_PLACES = ((7, -14, "left"), (7, 6, "left"), (-7, 6, "right"), (-7, -14, "right"))


def label_points(ax: Any, labels: Sequence[tuple[str, tuple[float, float]]], bold: str | None = None) -> None:
    """Label the points, each at the first place beside it (LABEL_PLACES) that stays inside the axes and overlaps no
    label placed before it: neighbours on a Pareto front are often close in both size and quality. Call it once the
    axes are laid out (their scales set, tight_layout done)."""
    renderer = ax.figure.canvas.get_renderer()
    ax.autoscale_view()
    inside = ax.get_window_extent(renderer)
    placed: list[Any] = []  # the labels' boxes so far
    for label, point in labels:
        for dx, dy, align in LABEL_PLACES:
            text = ax.annotate(
                label, point, textcoords="offset points", xytext=(dx, dy), ha=align, fontsize=9, zorder=5,
                fontweight="bold" if label == bold else "normal",
            )
            box = text.get_window_extent(renderer)
            fits = inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            if (fits and not any(box.overlaps(other) for other in placed)) or (dx, dy, align) == LABEL_PLACES[-1]:
                placed.append(box)
                break
            text.remove()


def size_axis(ax: Any, sizes: Sequence[float]) -> None:
    """A log-scale x axis of sizes in bytes with a few readable ticks ("5 kB", "1.2 MB"): more per decade the
    fewer decades the sizes span, and no labels on the minor ticks, so none collide."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    positive = [size for size in sizes if size > 0]
    decades = math.log10(max(positive) / min(positive)) if positive else 0.0
    subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 1 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: byte_size(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def byte_size(size: float) -> str:
    """4000 -> "4 kB", 1250000 -> "1.25 MB" (decimal units, as the sizes in the tables)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.3g} B"
