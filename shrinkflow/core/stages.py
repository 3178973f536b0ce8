"""The pipeline's stages as plain functions: each builds one variant's file, measures it and evaluates it.

The Prefect tasks call these, and so does the benchmark's plain script (bench/plain.py): one place for
each stage's logic. Each writes only into `out_dir` (a fresh folder of its own) and reads its inputs
without changing them.
"""

from __future__ import annotations

from pathlib import Path

from shrinkflow.core import compression, training
from shrinkflow.core.config import ModelConfig, PruneConfig, QuantizeConfig, TrainConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.evaluation import evaluate_model_file
from shrinkflow.core.training import EpochCallback
from shrinkflow.core.variants import BASELINE, PRUNED, Variant


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
    evaluation = evaluate_model_file(model_path, dataset, out_dir)
    return Variant(
        BASELINE, str(model_path), evaluation.metrics, evaluation.confusion_matrix_png, sparsity=sparsity,
        history=history, training={name: summary[name] for name in ("epochs_run", "train_seconds", "train_samples_per_s")},
        built_by=built_by,
    )


def prune_stage(
    baseline: Variant, dataset: DatasetRef, prune_cfg: PruneConfig, train_cfg: TrainConfig, out_dir: Path,
    built_by: str = "",
) -> Variant:
    """Prune a copy of the baseline (fine-tuned with the baseline's batch size and seed) and evaluate it."""
    model_path = out_dir / "model.keras"
    sparsity = compression.prune(baseline.model_path, dataset, prune_cfg, train_cfg, model_path)
    evaluation = evaluate_model_file(model_path, dataset, out_dir)
    settings = {**prune_cfg.model_dump(mode="json", exclude={"enabled"}), "batch_size": train_cfg.batch_size,
                "seed": train_cfg.seed}
    return Variant(
        PRUNED, str(model_path), evaluation.metrics, evaluation.confusion_matrix_png, parent=baseline.name,
        sparsity=sparsity, target_sparsity=prune_cfg.target_sparsity, settings=tuple(settings.items()),
        built_by=built_by,
    )


def quantize_stage(
    source: Variant, quantize_cfg: QuantizeConfig, dataset: DatasetRef, train_cfg: TrainConfig, out_dir: Path,
    built_by: str = "",
) -> Variant:
    """Convert `source` to TFLite in the one mode of `quantize_cfg` (see QuantizeConfig.for_mode) and evaluate
    it. QAT fine-tunes first, pruning-preserving when the source is pruned."""
    [mode] = quantize_cfg.modes
    model_path = out_dir / "model.tflite"
    preserve_sparsity = source.target_sparsity > 0
    if mode == "qat":
        compression.quantization_aware_train(
            source.model_path, dataset, quantize_cfg, train_cfg, model_path, preserve_sparsity
        )
    else:
        compression.convert_to_tflite(source.model_path, mode, dataset, quantize_cfg, model_path)
    evaluation = evaluate_model_file(model_path, dataset, out_dir)
    settings: dict[str, object] = {"mode": mode}
    if mode == "int8":
        settings |= {"int8_io": quantize_cfg.int8_io, "representative_samples": quantize_cfg.representative_samples}
    if mode == "qat":
        settings |= {
            "qat_epochs": quantize_cfg.qat_epochs, "qat_learning_rate": quantize_cfg.qat_learning_rate,
            "preserve_sparsity": preserve_sparsity, "batch_size": train_cfg.batch_size, "seed": train_cfg.seed,
        }
    return Variant(
        f"{source.name}-{mode}", str(model_path), evaluation.metrics, evaluation.confusion_matrix_png,
        parent=source.name, quantization=mode, sparsity=compression.tflite_sparsity(model_path),
        target_sparsity=source.target_sparsity, settings=tuple(settings.items()), built_by=built_by,
    )
