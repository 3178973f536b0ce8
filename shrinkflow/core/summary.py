"""The run's summary: one row per variant, its metrics beside the baseline's, as table cells and text."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from shrinkflow.core.names import BASELINE
from shrinkflow.core.tables import text_table
from shrinkflow.core.variants import Failure, Variant


@dataclass(frozen=True)
class SummaryRow:
    """One line of the run summary. The fields are in display order: the decision first (which variant
    shipped, as which version, and whether it became the champion), then how good on the test rows (with the 95 %
    interval, and the difference from the baseline with its paired interval), then how small. The validation
    difference the selection decided on comes after the test figures."""

    variant: str
    selected: bool = False
    eligible: bool = False  # within the budget on the validation rows (the selection rule)
    promoted: bool | None = None  # None: not shipped, so no gate decision
    version: str = ""
    status: str = "ok"  # or "failed: <reason>", "not applicable: <why>"
    accuracy: float | None = None  # classification
    rmse: float | None = None  # regression, in the target's units
    r2: float | None = None  # regression
    quality_ci_low: float | None = None  # the 95 % interval of the quality metric (select.quality) on the test rows
    quality_ci_high: float | None = None
    quality_delta: float | None = None  # the quality metric against the baseline's, on the test rows
    quality_delta_ci_low: float | None = None  # its 95 % interval, paired over the test rows
    quality_delta_ci_high: float | None = None
    val_quality_delta: float | None = None  # the same on the validation rows: what the selection decided on
    gzip_size_bytes: int | None = None
    compression_ratio: float | None = None
    param_bits_ratio: float | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None  # one sample per call
    batch64_samples_per_s: float | None = None  # throughput with 64 samples per call
    sparsity: float | None = None
    quantization: str = ""
    max_unique_weights: int | None = None
    f1_macro: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def outcome(self) -> str:
        """What became of the variant, in a word or two: shipped (as which version, and whether the gate kept the
        champion), eligible (within the budget, not the smallest), not eligible, failed, or not applicable."""
        if self.selected:
            return f"shipped: v{self.version}" + (", champion kept" if self.promoted is False else "")
        if not self.ok:
            return self.status.partition(":")[0]
        return "eligible" if self.eligible else "not eligible"

    def display(self) -> dict[str, Any]:
        """The row as table cells: marks as yes/no, each interval in one cell, missing values blank."""
        cells: dict[str, Any] = {}
        for column in fields(self):
            name = column.name
            if name.endswith("_ci_high"):
                continue
            if name.endswith("_ci_low"):
                interval = name.removesuffix("_ci_low")
                low, high = getattr(self, name), getattr(self, f"{interval}_ci_high")
                cells[f"{interval.removeprefix('quality_')}_ci" if interval != "quality" else "ci"] = (
                    None if low is None else f"{low:+.4f}..{high:+.4f}" if "delta" in interval else f"{low:.4f}..{high:.4f}"
                )
                continue
            cells[name] = getattr(self, name)
        cells["outcome"] = self.outcome()
        cells["selected"] = "yes" if self.selected else ""
        cells["eligible"] = "yes" if self.eligible else ""
        cells["promoted"] = "" if self.promoted is None else ("yes" if self.promoted else "no")
        return {name: "" if value is None else value for name, value in cells.items()}


def summary_rows(
    variants: Sequence[Variant | Failure], quality: str = "accuracy", eligible: Collection[str] = ()
) -> list[SummaryRow]:
    """One row per variant, its metrics next to the baseline's (the first variant); `quality` is the metric
    the delta is of (select.quality); `eligible` names the variants the selection rule let through."""
    baseline = next(variant for variant in variants if isinstance(variant, Variant) and variant.name == BASELINE)
    return [replace(summary_row(variant, baseline.metrics, quality), eligible=variant.name in eligible) for variant in variants]


def summary_row(variant: Variant | Failure, baseline: dict[str, float], quality: str = "accuracy") -> SummaryRow:
    if isinstance(variant, Failure):
        status = f"not applicable: {variant.reason}" if variant.not_applicable else f"failed: {variant.reason}"
        return SummaryRow(variant.name, status=status[:100])
    metrics = variant.metrics

    def rounded(name: str, digits: int = 4) -> float | None:
        return round(metrics[name], digits) if name in metrics else None

    return SummaryRow(
        variant=variant.name,
        accuracy=rounded("accuracy"),
        rmse=rounded("rmse"),
        r2=rounded("r2"),
        quality_ci_low=rounded(f"{quality}_ci_low"),
        quality_ci_high=rounded(f"{quality}_ci_high"),
        quality_delta=rounded("quality_delta"),
        quality_delta_ci_low=rounded("quality_delta_ci_low"),
        quality_delta_ci_high=rounded("quality_delta_ci_high"),
        val_quality_delta=rounded("val_quality_delta"),
        gzip_size_bytes=int(metrics["gzip_size_bytes"]),
        compression_ratio=round(baseline["gzip_size_bytes"] / metrics["gzip_size_bytes"], 2),
        param_bits_ratio=round(baseline["param_bits"] / metrics["param_bits"], 2) if metrics["param_bits"] else None,
        size_bytes=int(metrics["size_bytes"]),
        latency_ms=round(metrics["latency_ms"], 3),
        batch64_samples_per_s=rounded("batch64_samples_per_s", 0),
        sparsity=round(variant.sparsity, 3),
        quantization=str(variant.quantization),
        max_unique_weights=int(metrics["max_unique_weights"]),
        f1_macro=rounded("f1_macro"),
    )


# The decision columns a table always shows; a metric column blank in every row (rmse in a classification) is left out.
DECISION_COLUMNS = ("variant", "outcome", "selected", "promoted", "version", "status")
# What a glance needs, in the order it needs it (the terminal, the Prefect summary artifact at 1,400 px, the MLflow
# runs view): what became of each variant, its test quality and difference from the baseline, how small and fast,
# then the intervals, off to the right on a narrow window. Every column is in comparison.md / comparison.csv in the
# workspace and on the MLflow parent run.
DECISIVE_COLUMNS = (
    "variant", "outcome", "accuracy", "rmse", "r2", "quality_delta", "gzip_size_bytes", "compression_ratio", "latency_ms",
    "delta_ci", "ci",
)
# The compact table's most rows (the baseline's among them): the shipped and eligible variants first, then the
# nearest misses; so that the default run's whole output fits about a screen.
COMPACT_ROWS = 12


def compact_rows(rows: Sequence[SummaryRow], most: int = COMPACT_ROWS) -> tuple[list[SummaryRow], int]:
    """The rows a glance needs, in order: the shipped variant, the other eligible ones smallest first, then the rest
    that were measured, closest to the baseline first; failed and not-applicable rows last. At most `most` rows,
    the baseline always among them (last, when it would not be), the reference of every delta; returns them and
    how many were left out."""
    def order(row: SummaryRow) -> tuple[int, float]:
        if row.selected:
            return 0, 0.0
        if row.eligible:
            return 1, float(row.gzip_size_bytes or 0)
        if row.ok:
            return 2, abs(row.quality_delta or 0.0)
        return 3, 0.0

    ordered = sorted(rows, key=order)
    shown = ordered[:most]
    baseline = next((row for row in ordered[most:] if row.variant == BASELINE), None)
    if baseline is not None:
        shown = [*shown[: most - 1], baseline]
    return shown, len(ordered) - len(shown)


def headline(rows: Sequence[SummaryRow], name: str) -> str:
    """What the run shipped, how much smaller and at what cost, in one line."""
    shipped = next((row for row in rows if row.selected), None)
    if shipped is None:
        eligible = sum(row.eligible for row in rows)
        return f"{name}: nothing shipped: no variant passed the selection rule ({eligible} eligible of {len(rows)})"
    quality, value = ("accuracy", shipped.accuracy) if shipped.accuracy is not None else ("RMSE", shipped.rmse or 0.0)
    delta = shipped.quality_delta or 0.0
    scale, unit = (100, " pt") if shipped.accuracy is not None else (1, "")
    low, high = shipped.quality_delta_ci_low, shipped.quality_delta_ci_high
    paired = "" if low is None or high is None else f", 95 % interval {low * scale:+.2f} to {high * scale:+.2f}{unit}"
    champion = "now the champion" if shipped.promoted else "registered; the champion stays" if shipped.promoted is False else "already the champion"
    return (
        f"{name}: shipped {shipped.variant} as version {shipped.version} ({champion}): {shipped.compression_ratio}x smaller "
        f"({shipped.gzip_size_bytes:,} bytes gzipped) for {delta * scale:+.2f}{unit} of {quality}{paired}; test {quality} "
        f"{value:.4f}"
    )


def table_cells(rows: Sequence[SummaryRow], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows as table cells of `columns` (default: every column), leaving out a metric column that is blank in
    every row (rmse in a classification); the decision columns stay."""
    cells = [row.display() for row in rows]
    headers = [
        header for header in (columns or (cells[0] if cells else ()))
        if header in DECISION_COLUMNS or any(row[header] != "" for row in cells)
    ]
    return [{header: row[header] for header in headers} for row in cells]


def format_table(rows: Sequence[SummaryRow], columns: Sequence[str] | None = None) -> str:
    """The summary as text (`columns`, or every column with a value); failed rows leave the metrics blank."""
    cells = table_cells(rows, columns)
    if not cells:
        return "(no variants)"
    headers = list(cells[0])
    return text_table(headers, [[row[header] for header in headers] for row in cells])


def progress_line(built: Variant | Failure, quality: str) -> str:
    """One line of a run's progress, as each variant is built and measured: its test quality, size, and how it
    compares with the baseline; or why it is missing."""
    if isinstance(built, Failure):
        return f"  {built.name:<40} {'n/a' if built.not_applicable else 'FAILED'}: {built.reason[:90]}"
    metrics = built.metrics
    scale, unit = (100, " pt") if quality == "accuracy" else (1, "")
    delta = "" if built.name == BASELINE else f" ({metrics.get('quality_delta', 0.0) * scale:+.2f}{unit})"
    return (
        f"  {built.name:<40} {quality} {metrics[quality]:.4f}{delta:<11} {int(metrics['gzip_size_bytes']):>10,} bytes gzipped"
    )
