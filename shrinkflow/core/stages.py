"""The pipeline's stages as plain functions: each builds one variant's file, measures it and evaluates it.

Each takes its step (shrinkflow.core.steps: the parameters, built once from the config), the variant it starts
from and the dataset; it writes only into `out_dir` (a fresh folder of its own) and reads its inputs without
changing them. The Prefect tasks call these, and so does the benchmark's plain script (bench/plain.py). Which
stage applies to which variant is decided here too (the "not applicable" rules), so every caller agrees.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, ParamSpec

from shrinkflow.core import compression, training
from shrinkflow.core.config import ModelConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.evaluation import evaluate_model_file
from shrinkflow.core.kernels import weight_stats
from shrinkflow.core.names import (
    BASELINE, Quantization, Runtime, clustered_name, onnx_name, pruned_name, quantized_name,
)
from shrinkflow.core.steps import ClusterStep, DistillStep, OnnxStep, PruneStep, QuantizeStep, TrainStep
from shrinkflow.core.training import EpochCallback
from shrinkflow.core.variants import Variant


# Per-epoch training metrics are step-indexed MLflow metrics under this prefix (the MLflow UI charts them as a group).
HISTORY_PREFIX = "epoch/"


@dataclass(frozen=True)
class Measured:
    """What every variant gets measured: its validation and test metrics with what its kernels store (param_bits,
    distinct values), its confusion-matrix plot, its predictions row by row, and its sparsity, all read from the
    file itself."""

    metrics: dict[str, float]
    plot_png: str
    predictions: str
    sparsity: float


P = ParamSpec("P")


def timed(stage: Callable[P, Variant]) -> Callable[P, Variant]:
    """The stage, its variant stamped with when the stage started and finished: what its MLflow child run shows as
    its start and duration (the recording takes a fraction of a second; the building is what took the time)."""

    @functools.wraps(stage)
    def run(*args: P.args, **kwargs: P.kwargs) -> Variant:
        started = time.time()
        variant = stage(*args, **kwargs)
        return replace(variant, started_at=started, finished_at=time.time())

    return run


def trained_for(epochs: int) -> dict[str, float]:
    """A variant's `training` record: the epochs its stage trained for (the MLflow metric epochs_run). Pruning,
    clustering and QAT fine-tune for exactly their step's epochs (no early stopping); a student may stop early."""
    return {"epochs_run": float(epochs)}


def measure(model_path: Path, dataset: DatasetRef, out_dir: Path) -> Measured:
    """Evaluate a model file on the validation and test splits and read its kernels once."""
    evaluation = evaluate_model_file(model_path, dataset, out_dir)
    stats = weight_stats(model_path)
    weights = {"param_bits": float(stats.param_bits), "max_unique_weights": float(stats.max_unique)}
    return Measured(evaluation.metrics | weights, evaluation.plot_png, evaluation.predictions, stats.sparsity)


@timed
def train_stage(
    step: TrainStep, dataset: DatasetRef, out_dir: Path, on_epoch: EpochCallback | None = None, built_by: str = ""
) -> Variant:
    """Train the baseline, measure its sparsity and evaluate it; its per-epoch history comes along (as
    HISTORY_PREFIX + Keras's names: epoch/loss, epoch/val_loss, ..., apart from the evaluation's val_<metric>)."""
    history: dict[str, list[float]] = {}

    def record_epoch(epoch: int, logs: dict[str, float]) -> None:
        for name, value in logs.items():
            history.setdefault(f"{HISTORY_PREFIX}{name}", []).append(value)
        if on_epoch is not None:
            on_epoch(epoch, logs)

    model_path = out_dir / "model.keras"
    summary = training.train_baseline(dataset, step.model, step.train, model_path, on_epoch=record_epoch)
    measured = measure(model_path, dataset, out_dir)
    return Variant(
        BASELINE, str(model_path), measured.metrics, measured.plot_png, measured.predictions, step=step, sparsity=measured.sparsity,
        history=history, training={name: summary[name] for name in ("epochs_run", "train_seconds", "train_samples_per_s")},
        built_by=built_by,
    )


@timed
def distill_stage(step: DistillStep, teacher: Variant, dataset: DatasetRef, out_dir: Path, built_by: str = "") -> Variant:
    """Train the student from the teacher (or, from scratch, from the hard labels alone) and evaluate it."""
    model_path = out_dir / "model.keras"
    student = compression.distill(teacher.model_path, dataset, step, model_path)
    measured = measure(model_path, dataset, out_dir)
    return Variant(
        step.variant, str(model_path), measured.metrics | {"params": float(student.params)}, measured.plot_png,
        measured.predictions, parent=None if step.from_scratch else teacher.name, step=step, sparsity=measured.sparsity,
        training=trained_for(student.epochs_run), built_by=built_by,
    )


@timed
def prune_stage(step: PruneStep, source: Variant, dataset: DatasetRef, out_dir: Path, built_by: str = "") -> Variant:
    """Prune a copy of the baseline or a student and evaluate it."""
    model_path = out_dir / "model.keras"
    compression.prune(source.model_path, dataset, step, model_path)
    measured = measure(model_path, dataset, out_dir)
    return Variant(
        pruned_name(source.name), str(model_path), measured.metrics, measured.plot_png, measured.predictions, parent=source.name, step=step,
        sparsity=measured.sparsity, target_sparsity=step.target_sparsity, training=trained_for(step.tuning.epochs),
        built_by=built_by,
    )


@timed
def cluster_stage(step: ClusterStep, source: Variant, dataset: DatasetRef, out_dir: Path, built_by: str = "") -> Variant:
    """Cluster a copy of `source`'s weights (sparsity-preserving when it is pruned) and evaluate it."""
    model_path = out_dir / "model.keras"
    clustered_kernels = compression.cluster(source.model_path, dataset, step, model_path, source.target_sparsity > 0)
    measured = measure(model_path, dataset, out_dir)
    return Variant(
        clustered_name(source.name), str(model_path), measured.metrics | {"clustered_kernels": float(clustered_kernels)},
        measured.plot_png, measured.predictions, parent=source.name, step=step, sparsity=measured.sparsity,
        target_sparsity=source.target_sparsity, clusters=step.clusters, training=trained_for(step.tuning.epochs),
        built_by=built_by,
    )


@timed
def quantize_stage(step: QuantizeStep, source: Variant, dataset: DatasetRef, out_dir: Path, built_by: str = "") -> Variant:
    """Convert `source` to TFLite in the step's mode and evaluate it. QAT fine-tunes first, keeping what earlier
    steps made: the zeros of a pruned source, the clusters of a clustered one (PCQAT)."""
    model_path = out_dir / "model.tflite"
    trained: dict[str, float] = {}  # a post-training conversion trains nothing
    if step.mode is Quantization.QAT:
        assert step.tuning is not None, "a QAT step fine-tunes"
        compression.quantization_aware_train(
            source.model_path, dataset, step, model_path,
            preserve_sparsity=source.target_sparsity > 0, preserve_clusters=source.clusters > 0,
        )
        trained = trained_for(step.tuning.epochs)
    else:
        compression.convert_to_tflite(source.model_path, step, dataset, model_path)
    measured = measure(model_path, dataset, out_dir)
    return Variant(
        quantized_name(source.name, step.mode), str(model_path), measured.metrics, measured.plot_png, measured.predictions,
        parent=source.name, step=step, quantization=step.mode, sparsity=measured.sparsity,
        target_sparsity=source.target_sparsity, clusters=source.clusters, training=trained, built_by=built_by,
    )


@timed
def onnx_stage(step: OnnxStep, source: Variant, dataset: DatasetRef, out_dir: Path, built_by: str = "") -> Variant:
    """Convert `source` to ONNX and evaluate it in onnxruntime (see onnx_problem for what cannot be converted)."""
    model_path = out_dir / "model.onnx"
    compression.convert_to_onnx(source.model_path, step.opset, model_path)
    measured = measure(model_path, dataset, out_dir)
    return Variant(
        onnx_name(source.name), str(model_path), measured.metrics, measured.plot_png, measured.predictions, parent=source.name, step=step,
        quantization=source.quantization, sparsity=source.sparsity, target_sparsity=source.target_sparsity,
        clusters=source.clusters, built_by=built_by,
    )


# --- which stage applies to what: a "not applicable" row, not a failure ---


def prune_problem(model_cfg: ModelConfig) -> str | None:
    """Why pruning cannot apply to this model."""
    if model_cfg.is_recurrent and model_cfg.bidirectional:
        return "tfmot cannot prune Bidirectional layers (model.bidirectional)"
    return None


def quantization_problem(mode: Quantization, model_cfg: ModelConfig) -> str | None:
    """Why a quantization mode cannot apply to this model family."""
    if mode is Quantization.INT8 and model_cfg.is_recurrent and model_cfg.cell == "gru":
        # Not a failure row: the converter crashes the process (a segmentation fault in TensorFlow 2.21).
        return "the TFLite converter crashes calibrating GRU layers for int8 (TF 2.21); dynamic and float16 apply"
    if mode is Quantization.QAT and model_cfg.family in ("rnn", "text"):
        layers = " and ".join(
            ["Embedding"] * (model_cfg.family == "text") + [model_cfg.cell.upper()] * model_cfg.is_recurrent
        )
        return f"tfmot QAT has no scheme for {layers} layers (post-training modes apply)"
    return None


def onnx_problem(source: Variant, model_cfg: ModelConfig) -> str | None:
    """Why a variant cannot be converted to ONNX."""
    if source.int8_io:
        return "integer input and output (quantize.int8_io); convert the float-input variant"
    if source.is_tflite and model_cfg.is_recurrent:
        return "tf2onnx cannot convert TFLite's quantized LSTM/GRU; onnx.convert: [float] converts the Keras variants"
    return None


def to_cluster(
    sources: tuple[Literal["pruned", "unpruned"], ...], model: Variant, pruned: Variant | None
) -> list[Variant]:
    """Which of a chain's models clustering takes (cluster.apply_to): the model itself, its pruned copy (if it was
    built), or both."""
    return [model] * ("unpruned" in sources) + ([pruned] if "pruned" in sources and pruned is not None else [])


def converts_to_onnx(sources: tuple[Literal["float", "int8", "qat"], ...], variant: Variant) -> bool:
    """Whether the ONNX stage takes this variant (onnx.convert: float Keras files, int8 or QAT TFLite files)."""
    if variant.runtime is Runtime.ONNXRUNTIME:
        return False
    kind = str(variant.quantization) if variant.is_tflite else "float"
    return kind in sources
