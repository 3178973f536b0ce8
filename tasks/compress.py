"""Build the compressed variants: the pruned model and the TFLite conversions, each in its own child run."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from shrinkflow import compression, tracking
from shrinkflow.config import PipelineConfig
from shrinkflow.data import DatasetRef
from shrinkflow.tracking import TrackingRef
from shrinkflow.variants import VariantRef
from shrinkflow.workspace import Workspace
from tasks.options import COMPUTE_TASK

PRUNED = "pruned"


@task(name="prune", **COMPUTE_TASK)
def prune_baseline(
    config: PipelineConfig, baseline: VariantRef, dataset: DatasetRef, workspace: Workspace, tracking_ref: TrackingRef
) -> VariantRef:
    """Prune a copy of the baseline; the baseline's file is only read."""
    settings = {"target_sparsity": config.prune.target_sparsity, "schedule": config.prune.schedule, "epochs": config.prune.epochs}
    run_id = tracking.start_variant_run(
        tracking_ref, PRUNED,
        {"parent_variant": baseline.variant, "quantization": "none", **{f"prune.{k}": str(v) for k, v in settings.items()}},
    )
    out_path = workspace.run_dir(tracking_ref.parent_run_id, PRUNED) / "model.keras"
    with tracking.failure_recorded(tracking_ref, run_id):
        sparsity = compression.prune(baseline.model_path, dataset, config.prune, config.train, out_path)
        tracking_ref.client().set_tag(run_id, "sparsity", f"{sparsity:.4f}")
    return VariantRef(
        PRUNED, str(out_path), run_id, parent_variant=baseline.variant, sparsity=sparsity,
        settings=tuple(settings.items()),
    )


@task(name="quantize", task_run_name="quantize-{source.variant}-{mode}", **COMPUTE_TASK)
def quantize_variant(
    config: PipelineConfig,
    source: VariantRef,
    mode: str,
    dataset: DatasetRef,
    workspace: Workspace,
    tracking_ref: TrackingRef,
) -> VariantRef:
    """Convert `source` to TFLite with one quantization mode (qat fine-tunes first)."""
    name = f"{source.variant}-{mode}"
    quantize = config.quantize
    settings: dict[str, object] = {"mode": mode}
    if mode == "int8":
        settings |= {"int8_io": quantize.int8_io, "representative_samples": quantize.representative_samples}
    if mode == "qat":
        settings |= {"qat_epochs": quantize.qat_epochs, "preserve_sparsity": source.sparsity > 0}
    run_id = tracking.start_variant_run(tracking_ref, name, {"parent_variant": source.variant, "quantization": mode})
    out_path = workspace.run_dir(tracking_ref.parent_run_id, name) / "model.tflite"
    with tracking.failure_recorded(tracking_ref, run_id):
        if mode == "qat":
            compression.quantization_aware_train(
                source.model_path, dataset, quantize, config.train, out_path, preserve_sparsity=source.sparsity > 0
            )
        else:
            compression.convert_to_tflite(source.model_path, mode, dataset, quantize, out_path)
        sparsity = compression.tflite_sparsity(out_path)
        tracking_ref.client().set_tag(run_id, "sparsity", f"{sparsity:.4f}")
    return VariantRef(
        name, str(Path(out_path)), run_id, parent_variant=source.variant, quantization=mode, sparsity=sparsity,
        settings=tuple(settings.items()),
    )
