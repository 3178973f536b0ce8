"""What a stage hands on: a model variant (its file, how it was made, how it did on the test set), or why
it could not be made; and the run's summary rows built from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shrinkflow.core.tables import text_table

BASELINE = "baseline"
PRUNED = "pruned"
CLUSTERED = "clustered"
ONNX = "onnx"
STUDENT = "student"
FROM_SCRATCH = "scratch"


def derived_name(source: str, step: str) -> str:
    """The name of what `step` (pruned, clustered) makes of `source`: "pruned" of the baseline,
    "student-1-pruned" of a student, "pruned-clustered" of the pruned baseline."""
    return step if source == BASELINE else f"{source}-{step}"


def student_name(number: int, from_scratch: bool = False) -> str:
    """student-1, ...; the same student trained without its teacher is student-1-scratch."""
    return f"{STUDENT}-{number}" + (f"-{FROM_SCRATCH}" if from_scratch else "")


@dataclass(frozen=True)
class Variant:
    """A model variant on disk, evaluated on the test split.

    Attributes:
        name: "baseline", "student-1", "pruned", "pruned-clustered", ..., or "<source>-<mode>" such as
            "pruned-int8" (see derived_name).
        model_path: the `.keras` or `.tflite` file.
        metrics: its test metrics (shrinkflow.core.evaluation.METRIC_NAMES).
        plot_png: the plot of its test predictions.
        parent: the variant it was derived from (None for the baseline).
        quantization: "none", or the quantization mode (dynamic, float16, int8, qat).
        sparsity: share of zero weights, measured in the variant's own file.
        target_sparsity: the sparsity pruning aimed at, inherited from the pruned source (0 if never pruned).
        clusters: distinct values per kernel clustering aimed at, inherited likewise (0 if never clustered).
        settings: how it was derived from its parent (the lineage recorded in the manifest).
        history: per-epoch training metrics (train_loss, val_accuracy, ...), for the baseline.
        training: epochs_run, train_seconds and train_samples_per_s, for the baseline.
        built_by: the pipeline run (Prefect flow run) that built it; another run reused it from the cache.
        run_id: its MLflow child run in the current pipeline run, once recorded there.
    """

    name: str
    model_path: str
    metrics: dict[str, float]
    plot_png: str
    parent: str | None = None
    quantization: str = "none"
    sparsity: float = 0.0
    target_sparsity: float = 0.0
    clusters: int = 0
    settings: tuple[tuple[str, Any], ...] = ()
    history: dict[str, list[float]] = field(default_factory=dict)
    training: dict[str, float] = field(default_factory=dict)
    built_by: str = ""
    run_id: str = ""

    ok = True

    @property
    def is_tflite(self) -> bool:
        return self.model_path.endswith(".tflite")

    @property
    def runtime(self) -> str:
        """What runs the file: tensorflow (.keras), tflite (LiteRT) or onnxruntime (.onnx)."""
        return {".tflite": "tflite", ".onnx": "onnxruntime"}.get(Path(self.model_path).suffix, "tensorflow")

    def output_paths(self) -> tuple[str, ...]:
        """The files the variant consists of; a cached variant whose files are gone must be built again."""
        return (self.model_path, self.plot_png)


@dataclass(frozen=True)
class Failure:
    """A variant that could not be built or evaluated, and why ("Type: message"); the others go on. Or, with
    `not_applicable`, one whose stage does not apply to its source (the reason says why): not an error."""

    name: str
    reason: str
    run_id: str = ""
    not_applicable: bool = False

    ok = False


@dataclass(frozen=True)
class SummaryRow:
    """One line of the run summary. The fields are in display order: the decision first (which variant
    shipped, as which version, and whether it became the champion), then how accurate and how small."""

    variant: str
    selected: bool = False
    promoted: bool | None = None  # None: not shipped, so no gate decision
    version: str = ""
    status: str = "ok"  # or "failed: <reason>", "not applicable: <why>"
    accuracy: float | None = None  # classification
    rmse: float | None = None  # regression, in the target's units
    r2: float | None = None  # regression
    quality_delta: float | None = None  # the quality metric (select.quality) against the baseline
    gzip_size_bytes: int | None = None
    compression_ratio: float | None = None
    param_bits_ratio: float | None = None
    size_bytes: int | None = None
    latency_ms: float | None = None
    sparsity: float | None = None
    quantization: str = ""
    max_unique_weights: int | None = None
    f1_macro: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def display(self) -> dict[str, Any]:
        """The row as table cells: marks as yes/no, missing values blank."""
        cells = {column.name: getattr(self, column.name) for column in fields(self)}
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
        quality_delta=round(metrics[quality] - baseline[quality], 4),
        gzip_size_bytes=int(metrics["gzip_size_bytes"]),
        compression_ratio=round(baseline["gzip_size_bytes"] / metrics["gzip_size_bytes"], 2),
        param_bits_ratio=round(baseline["param_bits"] / metrics["param_bits"], 2) if metrics["param_bits"] else None,
        size_bytes=int(metrics["size_bytes"]),
        latency_ms=round(metrics["latency_ms"], 3),
        sparsity=round(variant.sparsity, 3),
        quantization=variant.quantization,
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
