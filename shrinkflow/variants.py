"""The hand-off between stages for one model variant, and the run summary built from them."""

from __future__ import annotations

from dataclasses import dataclass
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
        settings: how it was derived from its parent (the lineage recorded in the manifest).
    """

    variant: str
    model_path: str
    run_id: str
    parent_variant: str | None = None
    quantization: str = "none"
    sparsity: float = 0.0
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def is_tflite(self) -> bool:
        return self.model_path.endswith(".tflite")


def summary_row(
    variant: VariantRef, metrics: dict[str, float], baseline: dict[str, float]
) -> dict[str, Any]:
    """One summary line: the variant's metrics next to the baseline's. Marks are filled in later."""
    return {
        "variant": variant.variant,
        "status": "ok",
        "accuracy": round(metrics["accuracy"], 4),
        "accuracy_delta": round(metrics["accuracy"] - baseline["accuracy"], 4),
        "f1_macro": round(metrics["f1_macro"], 4),
        "size_bytes": int(metrics["size_bytes"]),
        "gzip_size_bytes": int(metrics["gzip_size_bytes"]),
        "compression_ratio": round(baseline["gzip_size_bytes"] / metrics["gzip_size_bytes"], 2),
        "latency_ms": round(metrics["latency_ms"], 3),
        "sparsity": round(variant.sparsity, 3),
        "quantization": variant.quantization,
        "selected": "",
        "promoted": "",
        "version": "",
    }


def failed_row(variant: str, reason: str) -> dict[str, Any]:
    """A summary line for a variant that could not be built or evaluated."""
    return {"variant": variant, "status": f"failed: {reason}"[:80]}


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for the terminal; failed rows leave the metric columns blank."""
    if not rows:
        return "(no variants)"
    headers = list(max(rows, key=len))
    cells = [[str(row.get(h, "")) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells)
    return "\n".join(lines)
