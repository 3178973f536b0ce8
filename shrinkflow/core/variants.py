"""What a stage hands on: a model variant (its file, the step that made it, how it did on the test set), or why
it could not be made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shrinkflow.core.names import Quantization, Runtime
from shrinkflow.core.steps import ClusterStep, OnnxStep, QuantizeStep, Step, step_settings


@dataclass(frozen=True)
class Variant:
    """A model variant on disk, evaluated on the test split.

    Attributes:
        name: see shrinkflow.core.names ("baseline", "student-1", "pruned-clustered", "pruned-int8", ...).
        model_path: the `.keras`, `.tflite` or `.onnx` file.
        metrics: its validation and test metrics (shrinkflow.core.evaluation), with what its kernels store, and
            once compared with the baseline (shrinkflow.core.selection.compare) the paired differences.
        plot_png: the plot of its test predictions.
        predictions: the file of its predictions on the validation and test rows (compared row by row).
        parent: the variant it was derived from (None for the baseline and a student trained from scratch).
        step: the parameters of the stage that made it (shrinkflow.core.steps): its lineage.
        quantization: how its weights are stored.
        sparsity: share of zero weights, measured in the variant's own file.
        target_sparsity: the sparsity pruning aimed at, inherited from the pruned source (0 if never pruned).
        clusters: distinct values per kernel clustering aimed at, inherited likewise (0 if never clustered).
        history: per-epoch training metrics (train_loss, val_accuracy, ...), for the baseline.
        training: what its stage trained: epochs_run for every stage that trains (the baseline, a student, pruning,
            clustering and QAT fine-tuning, each its own count), with train_seconds and train_samples_per_s for the
            baseline; empty for a conversion (dynamic, float16, int8, ONNX), which trains nothing.
        built_by: the pipeline run (Prefect flow run) that built it; another run reused it from the cache.
        started_at, finished_at: when the stage that built it started and finished (seconds since the epoch; 0:
            unknown), building and measuring included: its MLflow child run's start and end.
        run_id: its MLflow child run in the current pipeline run, once recorded there.
    """

    name: str
    model_path: str
    metrics: dict[str, float]
    plot_png: str
    predictions: str = ""
    parent: str | None = None
    step: Step | None = None
    quantization: Quantization = Quantization.NONE
    sparsity: float = 0.0
    target_sparsity: float = 0.0
    clusters: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    training: dict[str, float] = field(default_factory=dict)
    built_by: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    run_id: str = ""

    ok = True

    @property
    def runtime(self) -> Runtime:
        return Runtime.of_file(self.model_path)

    @property
    def is_tflite(self) -> bool:
        return self.runtime is Runtime.TFLITE

    @property
    def int8_io(self) -> bool:
        """Whether the file takes and gives integer tensors (quantize.int8_io)."""
        return isinstance(self.step, QuantizeStep) and self.step.int8_io

    def lineage(self) -> dict[str, Any]:
        """How it was made: the same keys for every variant (so MLflow's compare view lines variants up), and under
        `step` the settings of the step that made it, with what the step kept of its source (zeros, clusters)."""
        kept: dict[str, Any] = {}
        if isinstance(self.step, ClusterStep) or (isinstance(self.step, QuantizeStep) and self.quantization is Quantization.QAT):
            kept["preserve_sparsity"] = self.target_sparsity > 0
        if isinstance(self.step, QuantizeStep) and self.quantization is Quantization.QAT:
            kept["preserve_clusters"] = self.clusters > 0
        if isinstance(self.step, OnnxStep):
            kept["route"] = "tflite" if self.quantization is not Quantization.NONE else "saved_model"
        return {
            "parent_variant": self.parent or "none",
            "quantization": str(self.quantization),
            "runtime": str(self.runtime),
            "target_sparsity": self.target_sparsity,
            "clusters": self.clusters,
            "step": {**step_settings(self.step), **kept},
        }

    def output_paths(self) -> tuple[str, ...]:
        """The files the variant consists of; a cached variant whose files are gone must be built again."""
        return (self.model_path, self.plot_png, self.predictions)


@dataclass(frozen=True)
class Failure:
    """A variant that could not be built or evaluated, and why ("Type: message"); the others go on. Or, with
    `not_applicable`, one whose stage does not apply to its source (the reason says why): not an error."""

    name: str
    reason: str
    run_id: str = ""
    not_applicable: bool = False

    ok = False
