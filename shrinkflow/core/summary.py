"""The run's summary: one row per variant, its metrics beside the baseline's, as table cells and text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
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
        cells["selected"] = "yes" if self.selected else ""
        cells["promoted"] = "" if self.promoted is None else ("yes" if self.promoted else "no")
        return {name: "" if value is None else value for name, value in cells.items()}


def summary_rows(variants: Sequence[Variant | Failure], quality: str = "accuracy") -> list[SummaryRow]:
    """One row per variant, its metrics next to the baseline's (the first variant); `quality` is the metric
    the delta is of (select.quality)."""
    baseline = next(variant for variant in variants if isinstance(variant, Variant) and variant.name == BASELINE)
    return [summary_row(variant, baseline.metrics, quality) for variant in variants]


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
DECISION_COLUMNS = ("variant", "selected", "promoted", "version", "status")


def format_table(rows: Sequence[SummaryRow], columns: Sequence[str] | None = None) -> str:
    """The summary as text (`columns`, or every column with a value); failed rows leave the metrics blank."""
    if not rows:
        return "(no variants)"
    cells = [row.display() for row in rows]
    headers = [
        header for header in (columns or cells[0])
        if header in DECISION_COLUMNS or any(row[header] != "" for row in cells)
    ]
    return text_table(headers, [[row[header] for header in headers] for row in cells])
