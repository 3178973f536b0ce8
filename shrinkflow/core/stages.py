"""The pipeline's stages as plain functions: each builds one variant's file, measures it and evaluates it.

The Prefect tasks call these, and so does the benchmark's plain script (bench/plain.py): one place for
each stage's logic. Each writes only into `out_dir` (a fresh folder of its own) and reads its inputs
without changing them.
"""

from __future__ import annotations

from pathlib import Path

from shrinkflow.core import compression, training
from shrinkflow.core.config import (
    ClusterConfig, DistillConfig, ModelConfig, OnnxConfig, PruneConfig, QuantizeConfig, TrainConfig,
)
from shrinkflow.core.onnx_models import convert_to_onnx
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.evaluation import Evaluation, evaluate_model_file
from shrinkflow.core.training import EpochCallback
from shrinkflow.core.variants import BASELINE, CLUSTERED, ONNX, PRUNED, Failure, Variant, derived_name, student_name
from shrinkflow.core.weights import weight_stats


def measure(model_path: Path, dataset: DatasetRef, out_dir: Path) -> tuple[Evaluation, dict[str, float]]:
    """Evaluate a model file on the test split, and measure what its kernels store (param_bits, distinct
    values): the metrics every variant gets."""
    evaluation = evaluate_model_file(model_path, dataset, out_dir)
    stats = weight_stats(model_path)
    return evaluation, {"param_bits": float(stats.param_bits), "max_unique_weights": float(stats.max_unique)}


def train_stage(
    dataset: DatasetRef, model_cfg: ModelConfig, train_cfg: TrainConfig, out_dir: Path,
    on_epoch: EpochCallback | None = None, built_by: str = "",
) -> Variant:
    """Train the baseline, measure its sparsity and evaluate it; its per-epoch history comes along."""
    history: dict[str, list[float]] = {}

    def record_epoch(epoch: int, logs: dict[str, float]) -> None:
        for name, value in logs.items():
            history.setdefault(name if name.startswith("val_") else f"train_{name}", []).append(value)
        if on_epoch is not None:
            on_epoch(epoch, logs)

    model_path = out_dir / "model.keras"
    summary = training.train_baseline(dataset, model_cfg, train_cfg, model_path, on_epoch=record_epoch)
    sparsity = compression.keras_sparsity(training.load_keras_model(model_path))
    evaluation, weights = measure(model_path, dataset, out_dir)
    return Variant(
        BASELINE, str(model_path), evaluation.metrics | weights, evaluation.confusion_matrix_png, sparsity=sparsity,
        history=history, training={name: summary[name] for name in ("epochs_run", "train_seconds", "train_samples_per_s")},
        built_by=built_by,
    )


def distill_stage(
    teacher: Variant, number: int, dataset: DatasetRef, student_model: ModelConfig, distill_cfg: DistillConfig,
    train_cfg: TrainConfig, out_dir: Path, from_scratch: bool = False, built_by: str = "",
) -> Variant:
    """Train student `number` from the teacher (or, `from_scratch`, from the hard labels alone) and evaluate it."""
    model_path = out_dir / "model.keras"
    params = compression.distill(
        teacher.model_path, dataset, student_model, distill_cfg, train_cfg, model_path, from_scratch=from_scratch
    )
    evaluation, weights = measure(model_path, dataset, out_dir)
    settings: dict[str, object] = {
        "conv_filters": list(student_model.conv_filters) if student_model.family == "cnn" else [],
        "hidden_units": list(student_model.hidden_units), "dropout": student_model.dropout, "params": params,
        "epochs": distill_cfg.epochs, "learning_rate": distill_cfg.learning_rate,
        "early_stopping_patience": distill_cfg.early_stopping_patience,
        "batch_size": train_cfg.batch_size, "seed": train_cfg.seed,
    }
    if not from_scratch:
        settings |= {"temperature": distill_cfg.temperature, "alpha": distill_cfg.alpha}
    return Variant(
        student_name(number, from_scratch), str(model_path), evaluation.metrics | weights,
        evaluation.confusion_matrix_png, parent=None if from_scratch else teacher.name,
        sparsity=compression.keras_sparsity(training.load_keras_model(model_path)),
        settings=tuple(settings.items()), built_by=built_by,
    )


def prune_stage(
    source: Variant, dataset: DatasetRef, prune_cfg: PruneConfig, train_cfg: TrainConfig, out_dir: Path,
    built_by: str = "",
) -> Variant:
    """Prune a copy of the baseline or a student (fine-tuned with the baseline's batch size and seed) and
    evaluate it."""
    model_path = out_dir / "model.keras"
    sparsity = compression.prune(source.model_path, dataset, prune_cfg, train_cfg, model_path)
    evaluation, weights = measure(model_path, dataset, out_dir)
    settings = {**prune_cfg.model_dump(mode="json", exclude={"enabled"}), "batch_size": train_cfg.batch_size,
                "seed": train_cfg.seed}
    return Variant(
        derived_name(source.name, PRUNED), str(model_path), evaluation.metrics | weights,
        evaluation.confusion_matrix_png, parent=source.name, sparsity=sparsity,
        target_sparsity=prune_cfg.target_sparsity, settings=tuple(settings.items()), built_by=built_by,
    )


def cluster_stage(
    source: Variant, dataset: DatasetRef, cluster_cfg: ClusterConfig, train_cfg: TrainConfig, out_dir: Path,
    built_by: str = "",
) -> Variant:
    """Cluster a copy of `source`'s weights (sparsity-preserving when it is pruned) and evaluate it."""
    model_path = out_dir / "model.keras"
    preserve_sparsity = source.target_sparsity > 0
    clustered_kernels = compression.cluster(source.model_path, dataset, cluster_cfg, train_cfg, model_path, preserve_sparsity)
    evaluation, weights = measure(model_path, dataset, out_dir)
    settings = {
        **cluster_cfg.model_dump(mode="json", exclude={"enabled", "apply_to"}), "preserve_sparsity": preserve_sparsity,
        "clustered_kernels": clustered_kernels, "batch_size": train_cfg.batch_size, "seed": train_cfg.seed,
    }
    return Variant(
        derived_name(source.name, CLUSTERED), str(model_path), evaluation.metrics | weights,
        evaluation.confusion_matrix_png, parent=source.name,
        sparsity=compression.keras_sparsity(training.load_keras_model(model_path)),
        target_sparsity=source.target_sparsity, clusters=cluster_cfg.clusters, settings=tuple(settings.items()),
        built_by=built_by,
    )


def quantize_stage(
    source: Variant, quantize_cfg: QuantizeConfig, dataset: DatasetRef, train_cfg: TrainConfig, out_dir: Path,
    built_by: str = "",
) -> Variant:
    """Convert `source` to TFLite in the one mode of `quantize_cfg` (see QuantizeConfig.for_mode) and evaluate
    it. QAT fine-tunes first, keeping what earlier steps made: the zeros of a pruned source, the clusters of
    a clustered one (PCQAT)."""
    [mode] = quantize_cfg.modes
    model_path = out_dir / "model.tflite"
    preserve_sparsity = source.target_sparsity > 0
    preserve_clusters = source.clusters > 0
    if mode == "qat":
        compression.quantization_aware_train(
            source.model_path, dataset, quantize_cfg, train_cfg, model_path, preserve_sparsity, preserve_clusters
        )
    else:
        compression.convert_to_tflite(source.model_path, mode, dataset, quantize_cfg, model_path)
    evaluation, weights = measure(model_path, dataset, out_dir)
    settings: dict[str, object] = {"mode": mode}
    if mode == "int8":
        settings |= {"int8_io": quantize_cfg.int8_io, "representative_samples": quantize_cfg.representative_samples}
    if mode == "qat":
        settings |= {
            "qat_epochs": quantize_cfg.qat_epochs, "qat_learning_rate": quantize_cfg.qat_learning_rate,
            "preserve_sparsity": preserve_sparsity, "preserve_clusters": preserve_clusters,
            "batch_size": train_cfg.batch_size, "seed": train_cfg.seed,
        }
    return Variant(
        f"{source.name}-{mode}", str(model_path), evaluation.metrics | weights, evaluation.confusion_matrix_png,
        parent=source.name, quantization=mode, sparsity=compression.tflite_sparsity(model_path),
        target_sparsity=source.target_sparsity, clusters=source.clusters, settings=tuple(settings.items()),
        built_by=built_by,
    )


def onnx_stage(
    source: Variant, onnx_cfg: OnnxConfig, dataset: DatasetRef, out_dir: Path, built_by: str = ""
) -> Variant | Failure:
    """Convert `source` to ONNX (see OnnxConfig) and evaluate it in onnxruntime; "not applicable" for a
    TFLite file with integer input and output (quantize.int8_io), which onnxruntime would need fed as such."""
    name = f"{source.name}-{ONNX}"
    if dict(source.settings).get("int8_io"):
        return Failure(name, "integer input and output (quantize.int8_io); convert the float-input variant", not_applicable=True)
    model_path = out_dir / "model.onnx"
    convert_to_onnx(source.model_path, onnx_cfg.opset, model_path)
    evaluation, weights = measure(model_path, dataset, out_dir)
    route = "tflite" if source.is_tflite else "saved_model"
    return Variant(
        name, str(model_path), evaluation.metrics | weights, evaluation.confusion_matrix_png,
        parent=source.name, quantization=source.quantization, sparsity=source.sparsity,
        target_sparsity=source.target_sparsity, clusters=source.clusters,
        settings=(("opset", onnx_cfg.opset), ("route", route)), built_by=built_by,
    )
