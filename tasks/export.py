"""Ship the selected variant: register it in MLflow, write the export, then gate the champion alias.

The flow runs these in one Prefect transaction. Each task leaves in it what it changed, and its rollback
hook undoes that if anything later in the run fails or the run is interrupted: the alias goes back, the
export folder goes, the version is deleted. So a run that does not complete ships nothing.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.transactions import Transaction, get_transaction

from shrinkflow.tracking import registry
from shrinkflow.tracking import runs as tracking
from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.data import DatasetRef, load_splits
from shrinkflow.core.evaluation import Evaluation, classification_metrics
from shrinkflow.core.export import export_version, read_manifest, restore_moved, set_aside_versions
from shrinkflow.core.selection import Promotion, decide_promotion
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.core.variants import VariantRef
from shrinkflow.core.workspace import Workspace
from tasks.options import SHIPPING_TASK

CHAMPION = "champion"


@task(name="register-model", **SHIPPING_TASK)
def register_variant(
    config: PipelineConfig, variant: VariantRef, evaluation: Evaluation, tracking_ref: TrackingRef
) -> str:
    """Log the variant's model to its child run and register it; returns the new version number."""
    tags = {
        "variant": variant.variant,
        "sparsity": f"{variant.sparsity:.4f}",
        "quantization": variant.quantization,
        "accuracy": f"{evaluation.metrics['accuracy']:.4f}",
        "size_bytes": str(int(evaluation.metrics["size_bytes"])),
        "gzip_size_bytes": str(int(evaluation.metrics["gzip_size_bytes"])),
        "config_hash": config.config_hash(),
    }
    register = registry.log_and_register_tflite_model if variant.is_tflite else tracking.log_and_register_keras_model
    version = str(register(tracking_ref, variant.run_id, variant.model_path, config.name, tags).version)
    _remember({"registered_name": config.name, "registered_version": version, "tracking_uri": tracking_ref.tracking_uri})
    try:
        registry.describe(
            tracking_ref.client(), config.name, version,
            model_description=registry.model_description(config.name),
            version_description=registry.version_description(variant, evaluation.metrics, tracking_ref.parent_run_id),
        )
    except BaseException:  # a failed task is not rolled back: its version must not stay behind
        registry.delete_version(tracking_ref.client(), config.name, version)
        raise
    get_run_logger().info("registered %s as version %s of the model %r", variant.variant, version, config.name)
    return version


@register_variant.on_rollback
def _delete_version(transaction: Transaction) -> None:
    client = tracking.client_for(transaction.get("tracking_uri"))
    registry.delete_version(client, transaction.get("registered_name"), transaction.get("registered_version"))


@task(name="export", **SHIPPING_TASK)
def export_models(
    config: PipelineConfig,
    version: str,
    selected: VariantRef,
    variants: list[VariantRef],
    evaluations: dict[str, Evaluation],
    dataset: DatasetRef,
    workspace: Workspace,
    tracking_ref: TrackingRef,
) -> str:
    """exports/<name>/<version>/: the baseline SavedModel at the root, every variant beside it."""
    by_name = {ref.variant: ref for ref in variants}
    baseline = next(ref for ref in variants if ref.parent_variant is None)
    extra_files = {variant_file_name(ref): ref.model_path for ref in variants if ref is not baseline}
    manifest: dict[str, Any] = {
        "name": config.name,
        "version": version,
        "selected_variant": selected.variant,
        "selected_file": "model.keras" if selected is baseline else variant_file_name(selected),
        "config_hash": config.config_hash(),
        "mlflow_run_id": tracking_ref.parent_run_id,
        "mlflow_tracking_uri": tracking_ref.tracking_uri,
        "data_fingerprint": dataset.fingerprint,
        "preprocessing": dict(dataset.preprocessing),
        "class_names": list(dataset.class_names),
        "input_shape": list(dataset.input_shape),
        "metrics": evaluations[selected.variant].metrics,
        "variants": {
            name: {
                "file": "model.keras" if ref is baseline else variant_file_name(ref),
                "mlflow_run_id": ref.run_id,
                "parent_variant": ref.parent_variant,
                "quantization": ref.quantization,
                "sparsity": ref.sparsity,
                "settings": dict(ref.settings),
                "metrics": evaluations[name].metrics,
            }
            for name, ref in by_name.items()
        },
    }
    pruned = by_name.get("pruned")
    client = tracking_ref.client()
    # Version folders the registry does not know (a workspace reused with a fresh MLflow store) would clash
    # with the new versions, and TF Serving would serve the highest of them: set them aside.
    moved = set_aside_versions(workspace.exports / config.name, lambda folder: _registered(client, config.name, folder))
    _remember({"set_aside": [(str(a), str(b)) for a, b in moved]})
    for original, aside in moved:
        get_run_logger().warning("moved %s aside to %s: the MLflow registry has no such version", original, aside)
    path = export_version(
        workspace.exports / config.name / version, baseline.model_path, config.export, manifest, extra_files,
        extra_saved_models={"variants/pruned": pruned.model_path} if pruned and config.export.saved_model else None,
    )
    _remember({"export_path": str(path)})
    client.set_tag(tracking_ref.parent_run_id, "export_path", str(path))
    get_run_logger().info("exported version %s (%s) to %s", version, selected.variant, path)
    return str(path)


@export_models.on_rollback
def _remove_export(transaction: Transaction) -> None:
    path = Path(transaction.get("export_path"))
    shutil.rmtree(path, ignore_errors=True)
    restore_moved([(Path(a), Path(b)) for a, b in transaction.get("set_aside")])
    with contextlib.suppress(OSError):  # the model's folder, if this was its first export
        path.parent.rmdir()


def _registered(client: Any, name: str, folder: Path) -> bool:
    """Whether the registry's version of that number is the one this export folder holds."""
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    try:
        run_id = client.get_model_version(name, folder.name).run_id
    except MlflowException:
        return False
    selected = manifest.get("variants", {}).get(manifest.get("selected_variant"), {})
    return bool(run_id) and run_id == selected.get("mlflow_run_id")


def variant_file_name(ref: VariantRef) -> str:
    return f"variants/{ref.variant}{'.tflite' if ref.is_tflite else '.keras'}"


@task(name="gate-champion", **SHIPPING_TASK)
def gate_champion(
    config: PipelineConfig, version: str, evaluation: Evaluation, dataset: DatasetRef, tracking_ref: TrackingRef
) -> Promotion:
    """Move the alias `champion` to the new version only if it is not worse than the champion on this test set."""
    client = tracking_ref.client()
    champion = registry.champion_version(client, config.name)
    _remember({"previous_champion": champion.version if champion else None, "model_name": config.name,
               "tracking_uri": tracking_ref.tracking_uri})
    if champion is None:
        decision = decide_promotion(evaluation.metrics["accuracy"], None, config.select.max_regression)
    else:
        splits = load_splits(dataset)
        try:
            probabilities = registry.predict_with_version(
                tracking_ref.tracking_uri, config.name, champion.version, splits.x_test
            )
            champion_accuracy = classification_metrics(splits.y_test, probabilities, dataset.num_classes)["accuracy"]
        except Exception as exc:  # an incompatible or unloadable champion cannot vouch for a regression check
            decision = Promotion(False, f"could not evaluate champion version {champion.version} on this run's test set: {exc}")
        else:
            decision = decide_promotion(evaluation.metrics["accuracy"], champion_accuracy, config.select.max_regression)
            client.set_model_version_tag(config.name, version, "champion_accuracy_on_this_test_set", f"{champion_accuracy:.4f}")
    if decision.promote:
        client.set_registered_model_alias(config.name, CHAMPION, version)
    client.set_model_version_tag(config.name, version, "promoted", str(decision.promote).lower())
    client.set_model_version_tag(config.name, version, "promotion_reason", decision.reason[:5000])
    client.set_tag(tracking_ref.parent_run_id, "promoted", str(decision.promote).lower())
    if decision.promote:
        get_run_logger().info("champion gate: version %s is now the champion (%s)", version, decision.reason)
    else:
        get_run_logger().warning("champion gate: the champion stays; version %s is not promoted (%s)", version, decision.reason)
    return decision


@gate_champion.on_rollback
def _restore_champion(transaction: Transaction) -> None:
    client = tracking.client_for(transaction.get("tracking_uri"))
    registry.restore_champion(client, transaction.get("model_name"), transaction.get("previous_champion"))


def _remember(values: dict[str, Any]) -> None:
    """Keep what this task changed in its transaction, for its rollback hook."""
    transaction = get_transaction()
    for key, value in values.items():
        transaction.set(key, value)

