"""The hand-off between stages for one model variant, and the run summary built from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VariantRef:
    """A model variant on disk and the MLflow child run that tracks it.

    Attributes:
        variant: its name, e.g. "baseline", "pruned", "baseline-int8".
        model_path: the `.keras` or `.tflite` file.
        run_id: the variant's MLflow child run.
        parent_variant: the variant it was derived from (None for the baseline).
    """

    variant: str
    model_path: str
    run_id: str
    parent_variant: str | None = None


def summary_row(
    variant: VariantRef, metrics: dict[str, float], baseline: dict[str, float], registered_version: str | None
) -> dict[str, Any]:
    """One summary line: the variant's metrics next to the baseline's."""
    return {
        "variant": variant.variant,
        "accuracy": round(metrics["accuracy"], 4),
        "accuracy_delta": round(metrics["accuracy"] - baseline["accuracy"], 4),
        "f1_macro": round(metrics["f1_macro"], 4),
        "size_bytes": int(metrics["size_bytes"]),
        "gzip_size_bytes": int(metrics["gzip_size_bytes"]),
        "compression_ratio": round(baseline["gzip_size_bytes"] / metrics["gzip_size_bytes"], 2),
        "latency_ms": round(metrics["latency_ms"], 3),
        "registered_version": registered_version or "",
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for the terminal."""
    if not rows:
        return "(no variants)"
    headers = list(rows[0])
    cells = [[str(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells)
    return "\n".join(lines)
