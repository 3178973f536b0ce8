"""Build the compressed variants: the pruned model and the TFLite conversions, each in its own child run."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from shrinkflow.core import compression
from shrinkflow.tracking import runs as tracking
from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.core.variants import VariantRef
from shrinkflow.core.workspace import Workspace
from tasks.options import CACHED_TASK

PRUNED = "pruned"


def prune_settings(config: PipelineConfig) -> dict[str, object]:
    """What the pruned variant depends on besides the baseline and the data (its lineage and cache key)."""
    return {
        **config.prune.model_dump(mode="json", exclude={"enabled"}),
        "batch_size": config.train.batch_size,
        "seed": config.train.seed,
    }


def quantize_settings(config: PipelineConfig, mode: str, preserve_sparsity: bool) -> dict[str, object]:
    """What one quantized variant depends on besides its source model and the data."""
    quantize = config.quantize
    settings: dict[str, object] = {"mode": mode}
    if mode == "int8":
        settings |= {"int8_io": quantize.int8_io, "representative_samples": quantize.representative_samples}
    if mode == "qat":
        settings |= {
            "qat_epochs": quantize.qat_epochs, "qat_learning_rate": quantize.qat_learning_rate,
            "preserve_sparsity": preserve_sparsity, "batch_size": config.train.batch_size, "seed": config.train.seed,
        }
    return settings


@task(name="prune", **CACHED_TASK)
def prune_baseline(
    config: PipelineConfig,
    baseline: VariantRef,
    dataset: DatasetRef,
    workspace: Workspace,
    tracking_ref: TrackingRef,
    cache_key: str,
) -> VariantRef:
    """Prune a copy of the baseline; the baseline's file is only read."""
    settings = prune_settings(config)
    run_id = tracking.start_variant_run(tracking_ref, PRUNED)
    out_path = workspace.stage_dir(cache_key) / "model.keras"
    with tracking.failure_recorded(tracking_ref, run_id):
        sparsity = compression.prune(baseline.model_path, dataset, config.prune, config.train, out_path)
        pruned = VariantRef(
            PRUNED, str(out_path), run_id, parent_variant=baseline.variant, sparsity=sparsity,
            target_sparsity=config.prune.target_sparsity, settings=tuple(settings.items()),
        )
        tracking.log_variant_params(tracking_ref, pruned)
    get_run_logger().info(
        "pruned a copy of %s: %.1f%% of its weights are zero (target %.1f%%)",
        baseline.variant, 100 * sparsity, 100 * config.prune.target_sparsity,
    )
    return pruned


@task(name="quantize", task_run_name="quantize-{source.variant}-{mode}", **CACHED_TASK)
def quantize_variant(
    config: PipelineConfig,
    source: VariantRef,
    mode: str,
    dataset: DatasetRef,
    workspace: Workspace,
    tracking_ref: TrackingRef,
    cache_key: str,
) -> VariantRef:
    """Convert `source` to TFLite with one quantization mode (qat fine-tunes first)."""
    name = f"{source.variant}-{mode}"
    quantize = config.quantize
    preserve_sparsity = source.variant == PRUNED
    settings = quantize_settings(config, mode, preserve_sparsity)
    run_id = tracking.start_variant_run(tracking_ref, name)
    out_path = workspace.stage_dir(cache_key) / "model.tflite"
    with tracking.failure_recorded(tracking_ref, run_id):
        if mode == "qat":
            compression.quantization_aware_train(
                source.model_path, dataset, quantize, config.train, out_path, preserve_sparsity
            )
        else:
            compression.convert_to_tflite(source.model_path, mode, dataset, quantize, out_path)
        sparsity = compression.tflite_sparsity(out_path)
        variant = VariantRef(
            name, str(Path(out_path)), run_id, parent_variant=source.variant, quantization=mode, sparsity=sparsity,
            target_sparsity=source.target_sparsity, settings=tuple(settings.items()),
        )
        tracking.log_variant_params(tracking_ref, variant)
    get_run_logger().info(
        "converted %s to TFLite (%s): %s bytes, %.1f%% of its weights are zero",
        source.variant, mode, f"{out_path.stat().st_size:,}", 100 * sparsity,
    )
    return variant
