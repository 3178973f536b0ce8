"""The hand-off between stages for one model variant, and the run summary built from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class VariantRef:
    """A model variant on disk and the MLflow child run that tracks it.

    Attributes:
        variant: its name: "baseline", "pruned", or "<source>-<mode>" such as "pruned-int8".
        model_path: the `.keras` or `.tflite` file.
        run_id: the variant's MLflow child run.
        parent_variant: the variant it was derived from (None for the baseline).
        quantization: "none", or the quantization mode (dynamic, float16, int8, qat).
        sparsity: share of zero weights, measured in the variant's own file.
        target_sparsity: the sparsity pruning aimed at, inherited from the pruned source (0 if never pruned).
        settings: how it was derived from its parent (the lineage recorded in the manifest).
    """

    variant: str
    model_path: str
    run_id: str
    parent_variant: str | None = None
    quantization: str = "none"
    sparsity: float = 0.0
    target_sparsity: float = 0.0
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def is_tflite(self) -> bool:
        return self.model_path.endswith(".tflite")


@dataclass(frozen=True)
class SummaryRow:
    """One line of the run summary. The fields are in display order: the decision first (which variant
    shipped, as which version, and whether it became the champion), then how accurate and how small."""

    variant: str
    selected: bool = False
    promoted: bool | None = None  # None: not shipped, so no gate decision
    version: str = ""
    status: str = "ok"  # or "failed: <reason>"
    accuracy: float | None = None
    accuracy_delta: float | None = None
    gzip_size_bytes: int | None = None
    compression_ratio: float | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None
    sparsity: float | None = None
    quantization: str = ""
    f1_macro: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def display(self) -> dict[str, Any]:
        """The row as table cells: marks as yes/no, missing values blank."""
        cells = {field.name: getattr(self, field.name) for field in fields(self)}
        cells["selected"] = "yes" if self.selected else ""
        cells["promoted"] = "" if self.promoted is None else ("yes" if self.promoted else "no")
        return {name: "" if value is None else value for name, value in cells.items()}


def summary_row(variant: VariantRef, metrics: dict[str, float], baseline: dict[str, float]) -> SummaryRow:
    """One summary line: the variant's metrics next to the baseline's."""
    return SummaryRow(
        variant=variant.variant,
        accuracy=round(metrics["accuracy"], 4),
        accuracy_delta=round(metrics["accuracy"] - baseline["accuracy"], 4),
        gzip_size_bytes=int(metrics["gzip_size_bytes"]),
        compression_ratio=round(baseline["gzip_size_bytes"] / metrics["gzip_size_bytes"], 2),
        size_bytes=int(metrics["size_bytes"]),
        latency_ms=round(metrics["latency_ms"], 3),
        sparsity=round(variant.sparsity, 3),
        quantization=variant.quantization,
        f1_macro=round(metrics["f1_macro"], 4),
    )


def failed_row(variant: str, reason: str) -> SummaryRow:
    """A summary line for a variant that could not be built or evaluated."""
    return SummaryRow(variant, status=f"failed: {reason}"[:80])


def format_table(rows: Sequence[SummaryRow], columns: Sequence[str] | None = None) -> str:
    """A plain-text table for the terminal (every column, or `columns`); failed rows leave the metrics blank."""
    if not rows:
        return "(no variants)"
    table = [row.display() for row in rows]
    headers = list(columns or table[0])
    cells = [[str(row[h]) for h in headers] for row in table]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells)
    return "\n".join(lines)
