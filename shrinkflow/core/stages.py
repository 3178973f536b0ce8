"""The pipeline's stages as plain functions: each builds one variant's file, measures it and evaluates it.

The Prefect tasks call these, and so does the benchmark's plain script (bench/plain.py): one place for
each stage's logic. Each writes only into `out_dir` (a fresh folder of its own) and reads its inputs
without changing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shrinkflow.core import compression, training
from shrinkflow.core.config import (
    ClusterConfig, DistillConfig, ModelConfig, OnnxConfig, PruneConfig, QuantizeConfig, TrainConfig,
)
from shrinkflow.core.onnx_models import convert_to_onnx
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.evaluation import evaluate_model_file
from shrinkflow.core.training import EpochCallback
from shrinkflow.core.variants import BASELINE, CLUSTERED, ONNX, PRUNED, Failure, Variant, derived_name, student_name
from shrinkflow.core.weights import weight_stats


@dataclass(frozen=True)
class Measured:
    """What every variant gets measured: its test metrics with what its kernels store (param_bits, distinct
    values), its confusion-matrix plot, and its sparsity, all read from the file itself."""

    metrics: dict[str, float]
    plot_png: str
    sparsity: float


def measure(model_path: Path, dataset: DatasetRef, out_dir: Path) -> Measured:
    """Evaluate a model file on the test split and read its kernels once."""
    evaluation = evaluate_model_file(model_path, dataset, out_dir)
    stats = weight_stats(model_path)
    weights = {"param_bits": float(stats.param_bits), "max_unique_weights": float(stats.max_unique)}
    return Measured(evaluation.metrics | weights, evaluation.plot_png, stats.sparsity)


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
    measured = measure(model_path, dataset, out_dir)
    return Variant(
        BASELINE, str(model_path), measured.metrics, measured.plot_png, sparsity=measured.sparsity,
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
    measured = measure(model_path, dataset, out_dir)
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
        student_name(number, from_scratch), str(model_path), measured.metrics,
        measured.plot_png, parent=None if from_scratch else teacher.name,
        sparsity=measured.sparsity,
        settings=tuple(settings.items()), built_by=built_by,
    )


def prune_stage(
    source: Variant, dataset: DatasetRef, prune_cfg: PruneConfig, train_cfg: TrainConfig, out_dir: Path,
    built_by: str = "",
) -> Variant:
    """Prune a copy of the baseline or a student (fine-tuned with the baseline's batch size and seed) and
    evaluate it."""
    model_path = out_dir / "model.keras"
    compression.prune(source.model_path, dataset, prune_cfg, train_cfg, model_path)
    measured = measure(model_path, dataset, out_dir)
    settings = {**prune_cfg.model_dump(mode="json", exclude={"enabled"}), "batch_size": train_cfg.batch_size,
                "seed": train_cfg.seed}
    return Variant(
        derived_name(source.name, PRUNED), str(model_path), measured.metrics,
        measured.plot_png, parent=source.name, sparsity=measured.sparsity,
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
    measured = measure(model_path, dataset, out_dir)
    settings = {
        **cluster_cfg.model_dump(mode="json", exclude={"enabled", "apply_to"}), "preserve_sparsity": preserve_sparsity,
        "clustered_kernels": clustered_kernels, "batch_size": train_cfg.batch_size, "seed": train_cfg.seed,
    }
    return Variant(
        derived_name(source.name, CLUSTERED), str(model_path), measured.metrics,
        measured.plot_png, parent=source.name,
        sparsity=measured.sparsity,
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
    measured = measure(model_path, dataset, out_dir)
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
        f"{source.name}-{mode}", str(model_path), measured.metrics, measured.plot_png,
        parent=source.name, quantization=mode, sparsity=measured.sparsity,
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
    measured = measure(model_path, dataset, out_dir)
    route = "tflite" if source.is_tflite else "saved_model"
    return Variant(
        name, str(model_path), measured.metrics, measured.plot_png,
        parent=source.name, quantization=source.quantization, sparsity=source.sparsity,
        target_sparsity=source.target_sparsity, clusters=source.clusters,
        settings=(("opset", onnx_cfg.opset), ("route", route)), built_by=built_by,
    )


def prune_problem(model_cfg: ModelConfig) -> str | None:
    """Why pruning cannot apply to this model: a "not applicable" row, not a failure."""
    if model_cfg.is_recurrent and model_cfg.bidirectional:
        return "tfmot cannot prune Bidirectional layers (model.bidirectional)"
    return None


def quantization_problem(mode: str, model_cfg: ModelConfig) -> str | None:
    """Why a quantization mode cannot apply to this model family: a "not applicable" row, not a failure."""
    if mode == "int8" and model_cfg.is_recurrent and model_cfg.cell == "gru":
        # Not a failure row: the converter crashes the process (a segmentation fault in TensorFlow 2.21).
        return "the TFLite converter crashes calibrating GRU layers for int8 (TF 2.21); dynamic and float16 apply"
    if mode == "qat" and model_cfg.family in ("rnn", "text"):
        layers = " and ".join(
            ["Embedding"] * (model_cfg.family == "text") + [model_cfg.cell.upper()] * model_cfg.is_recurrent
        )
        return f"tfmot QAT has no scheme for {layers} layers (post-training modes apply)"
    return None


def to_cluster(cluster_cfg: ClusterConfig, model: Variant, pruned: Variant | Failure | None) -> list[Variant]:
    """Which of a chain's models the clustering stage takes (ClusterConfig.apply_to): the model itself, its
    pruned copy (if it was built), both, or none when clustering is off."""
    if not cluster_cfg.enabled:
        return []
    chosen = [model] if "unpruned" in cluster_cfg.apply_to else []
    return chosen + ([pruned] if "pruned" in cluster_cfg.apply_to and isinstance(pruned, Variant) else [])


def onnx_problem(source: Variant, model_cfg: ModelConfig) -> str | None:
    """Why a variant cannot be converted to ONNX: a "not applicable" row, not a failure."""
    if source.is_tflite and model_cfg.is_recurrent:
        return "tf2onnx cannot convert TFLite's quantized LSTM/GRU; onnx.convert: [float] converts the Keras variants"
    return None


def converts_to_onnx(onnx_cfg: OnnxConfig, variant: Variant | Failure) -> bool:
    """Whether the ONNX stage takes this variant (OnnxConfig.convert: float Keras files, int8 or QAT TFLite)."""
    if not onnx_cfg.enabled or not isinstance(variant, Variant) or variant.runtime == "onnxruntime":
        return False
    return (variant.quantization if variant.is_tflite else "float") in onnx_cfg.convert
