"""Register the shipped model in MLflow and write the deployable export."""

from pathlib import Path
from typing import Any

from prefect import task

from shrinkflow import tracking
from shrinkflow.config import PipelineConfig
from shrinkflow.data import DatasetRef
from shrinkflow.evaluation import Evaluation
from shrinkflow.export import export_version
from shrinkflow.tracking import TrackingRef
from shrinkflow.variants import VariantRef
from shrinkflow.workspace import Workspace
from tasks.options import IO_TASK


@task(name="register-model", **IO_TASK)
def register_model(
    config: PipelineConfig, variant: VariantRef, evaluation: Evaluation, tracking_ref: TrackingRef
) -> str:
    """Log the variant's Keras model to its child run and register it; returns the version number."""
    tags = {
        "variant": variant.variant,
        "config_hash": config.config_hash(),
        "accuracy": f"{evaluation.metrics['accuracy']:.4f}",
        "size_bytes": str(int(evaluation.metrics["size_bytes"])),
        "gzip_size_bytes": str(int(evaluation.metrics["gzip_size_bytes"])),
    }
    version = tracking.log_and_register_keras_model(tracking_ref, variant.run_id, variant.model_path, config.name, tags)
    return str(version.version)


@task(name="export", **IO_TASK)
def export_models(
    config: PipelineConfig,
    version: str,
    shipped: VariantRef,
    evaluations: dict[str, Evaluation],
    variants: list[VariantRef],
    dataset: DatasetRef,
    workspace: Workspace,
    tracking_ref: TrackingRef,
) -> str:
    manifest: dict[str, Any] = {
        "name": config.name,
        "version": version,
        "shipped_variant": shipped.variant,
        "config_hash": config.config_hash(),
        "mlflow_run_id": tracking_ref.parent_run_id,
        "mlflow_tracking_uri": tracking_ref.tracking_uri,
        "data_fingerprint": dataset.fingerprint,
        "preprocessing": dict(dataset.preprocessing),
        "class_names": list(dataset.class_names),
        "metrics": evaluations[shipped.variant].metrics,
        "variants": {
            ref.variant: {
                "mlflow_run_id": ref.run_id,
                "parent_variant": ref.parent_variant,
                "metrics": evaluations[ref.variant].metrics,
            }
            for ref in variants
        },
    }
    target = workspace.exports / config.name / version
    path = export_version(target, shipped.model_path, config.export, manifest)
    tracking_ref.client().set_tag(tracking_ref.parent_run_id, "export_path", str(path))
    return str(path)
