"""Ship the selected variant: register it in MLflow, write the export, then gate the champion alias.

The flow runs these in one Prefect transaction. Each task leaves in it what it changed, and its rollback
hook undoes that if anything later in the run fails or the run is interrupted: the alias goes back, the
export folder goes, the version is deleted. So a run that does not complete ships nothing.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.transactions import Transaction, get_transaction

from shrinkflow.core.config import ExportConfig, SelectConfig
from shrinkflow.core.comparison import paired_test
from shrinkflow.core.data import DatasetRef, split_targets
from shrinkflow.core.evaluation import load_row_predictions, predict_split, row_predictions, task_metrics, true_rows
from shrinkflow.core.export import build_manifest, export_variants, restore_moved, set_aside_versions
from shrinkflow.core.files import sha256_file
from shrinkflow.core.locks import HeldLock
from shrinkflow.core.selection import Promotion, Quality, decide_promotion
from shrinkflow.core.statistics import REPORTED_CONFIDENCE
from shrinkflow.core.variants import Variant
from shrinkflow.core.workspace import Workspace
from shrinkflow.tasks.options import SHIPPING_TASK
from shrinkflow.tracking import models, registry, runs, versions
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.tracking.store import model_lock


@dataclass(frozen=True)
class Registration:
    """The registered version that holds the selected variant; `new` is False when the champion already was
    this very file (an unchanged re-run), so nothing was registered, exported or gated."""

    version: str
    new: bool


@task(name="register-model", **SHIPPING_TASK)
def register_variant(
    name: str, config_hash: str, variant: Variant, dataset: DatasetRef, tracking_ref: TrackingRef
) -> Registration:
    """Log the variant's model to its child run, behind `dataset`'s serving contract, and register it as a new
    version of the model `name`.

    The model stays locked for this run from here until its shipment commits or rolls back (the hooks below), so
    a concurrent run of the same config sees this run's champion and does not register the same file again.
    """
    uri = tracking_ref.tracking_uri
    lock = model_lock(uri, name, on_wait=lambda holder: get_run_logger().info(
        "waiting for another run (%s) to finish shipping %r", holder, name
    ))
    _remember(model_lock=lock)
    try:
        return _register(name, config_hash, variant, dataset, tracking_ref, lock)
    except BaseException:
        lock.release()
        raise


def _register(
    name: str, config_hash: str, variant: Variant, dataset: DatasetRef, tracking_ref: TrackingRef, lock: HeldLock
) -> Registration:
    uri = tracking_ref.tracking_uri
    sha256 = sha256_file(variant.model_path)
    champion = registry.champion_version(uri, name)
    if champion is not None and champion.tags.get(registry.FILE_SHA256_TAG) == sha256:
        get_run_logger().info(
            "the champion, version %s of %r, is this very file: nothing new to register", champion.version, name
        )
        lock.release()  # nothing of this run to ship
        return Registration(str(champion.version), new=False)
    metrics = variant.metrics
    quality: dict[str, str] = {name: f"{metrics[name]:.4f}" for name in ("accuracy", "rmse", "r2") if name in metrics}
    tags: dict[str, str] = {
        "variant": variant.name,
        "sparsity": f"{variant.sparsity:.4f}",
        "quantization": str(variant.quantization),
        "runtime": str(variant.runtime),
        **quality,
        "size_bytes": str(int(metrics["size_bytes"])),
        "gzip_size_bytes": str(int(metrics["gzip_size_bytes"])),
        "config_hash": config_hash,
        registry.FILE_SHA256_TAG: sha256,
    }
    version = models.register_variant(tracking_ref, variant, name, tags, dataset)
    _remember(registered_name=name, registered_version=version, tracking_uri=uri)
    try:
        registry.describe(
            uri, name, version,
            model_description=registry.model_description(name),
            version_description=registry.version_description(
                variant, tracking_ref.parent_run_id, tracking_ref.run_name, tracking_ref.experiment_id
            ),
        )
    except BaseException:  # a failed task is not rolled back: its version must not stay behind
        registry.delete_version(uri, name, version)
        raise
    get_run_logger().info("registered %s as version %s of the model %r", variant.name, version, name)
    return Registration(version, new=True)


@register_variant.on_rollback
def _delete_version(transaction: Transaction) -> None:
    try:
        if transaction.get("registered_version", None) is not None:
            registry.delete_version(transaction.get("tracking_uri"), transaction.get("registered_name"), transaction.get("registered_version"))
    finally:
        transaction.get("model_lock").release()


@register_variant.on_commit
def _release_model(transaction: Transaction) -> None:
    transaction.get("model_lock").release()


_release_model.log_on_run = False  # type: ignore[attr-defined]  # Prefect's switch for its "Running commit hook" lines


@task(name="export", **SHIPPING_TASK)
def export_models(
    name: str,
    export_cfg: ExportConfig,
    version: str,
    selected: Variant,
    variants: Sequence[Variant],
    dataset: DatasetRef,
    config_hash: str,
    workspace: Workspace,
    tracking_ref: TrackingRef,
) -> str:
    """exports/<name>/<version>/: the baseline SavedModel at the root, every variant beside it."""
    provenance = {"mlflow_run_id": tracking_ref.parent_run_id, "mlflow_tracking_uri": tracking_ref.tracking_uri}
    manifest = build_manifest(name, version, selected, variants, dataset, config_hash, provenance)
    # Version folders the registry does not know (a workspace reused with a fresh MLflow store) would clash
    # with the new versions, and TF Serving would serve the highest of them: set them aside.
    moved = set_aside_versions(
        workspace.exports / name, lambda folder: registry.holds_export(tracking_ref.tracking_uri, name, folder)
    )
    _remember(set_aside=[(str(a), str(b)) for a, b in moved])
    for original, aside in moved:
        get_run_logger().warning("moved %s aside to %s: the MLflow registry has no such version", original, aside)
    path = export_variants(workspace.exports / name / version, variants, export_cfg, manifest, dataset)
    _remember(export_path=str(path))
    runs.tag_parent(tracking_ref, {versions.EXPORT_PATH_TAG: str(path)})
    get_run_logger().info("exported version %s (%s) to %s", version, selected.name, path)
    return str(path)


@export_models.on_rollback
def _remove_export(transaction: Transaction) -> None:
    path = Path(transaction.get("export_path"))
    shutil.rmtree(path, ignore_errors=True)
    restore_moved([(Path(a), Path(b)) for a, b in transaction.get("set_aside")])
    with contextlib.suppress(OSError):  # the model's folder, if this was its first export
        path.parent.rmdir()


@task(name="gate-champion", **SHIPPING_TASK)
def gate_champion(
    name: str, select_cfg: SelectConfig, version: str, selected: Variant, dataset: DatasetRef, tracking_ref: TrackingRef
) -> Promotion:
    """Move the alias `champion` to the new version only if it is not worse than the champion on this test set
    (on the quality metric, select.quality)."""
    uri = tracking_ref.tracking_uri
    champion = registry.champion_version(uri, name)
    _remember(previous_champion=champion.version if champion else None, model_name=name, tracking_uri=uri, candidate=version)
    quality = Quality(select_cfg.quality)
    candidate = selected.metrics[quality.metric]
    record: dict[str, str] = {}
    if champion is None:
        decision = decide_promotion(candidate, None, select_cfg.max_regression, quality)
    else:
        try:
            with registry.version_predictor(uri, name, champion.version, dataset) as predict:
                outputs = predict_split(predict, dataset, "test")  # the test split streamed, batch by batch
        except Exception as exc:  # an incompatible or unloadable champion cannot vouch for a regression check
            decision = Promotion(False, f"could not evaluate champion version {champion.version} on this run's test set: {exc}")
        else:
            y_test = split_targets(dataset, "test")
            champion_quality = task_metrics(dataset, y_test, outputs)[quality.metric]
            # Challenger and champion on the same test rows: a paired test (McNemar's for accuracy).
            test = paired_test(
                true_rows(dataset, y_test), load_row_predictions(selected.predictions, "test"),
                row_predictions(dataset, outputs), quality, select_cfg.confidence or REPORTED_CONFIDENCE, dataset.num_classes,
            )
            decision = decide_promotion(
                candidate, champion_quality, select_cfg.max_regression, quality, test, select_cfg.confidence
            )
            record = gate_record(decision, quality.metric, champion.version, champion_quality)
    record |= {"promoted": str(decision.promote).lower(), "promotion_reason": decision.reason[:5000]}
    registry.tag_version(uri, name, version, record)
    runs.tag_parent(tracking_ref, record)
    if decision.promote:  # last: a move that fails takes itself back, and this task has nothing else to undo
        run_name = versions.pipeline_run_name(uri, tracking_ref.parent_run_id)
        versions.move_champion(uri, name, version, by=run_name, reason=decision.reason)
        get_run_logger().info("champion gate: version %s is now the champion (%s)", version, decision.reason)
    else:
        get_run_logger().warning("champion gate: the champion stays; version %s is not promoted (%s)", version, decision.reason)
    return decision


def gate_record(decision: Promotion, metric: str, champion_version: str, champion_quality: float) -> dict[str, str]:
    """What the gate recorded on the version and the parent run: the champion's quality on this run's test rows,
    and the paired test, its p-value and the interval of the difference (challenger minus champion)."""
    record = {"gate_champion_version": str(champion_version), f"champion_{metric}_on_this_test_set": f"{champion_quality:.4f}"}
    if decision.test is not None:
        record |= {
            "gate_test": decision.test.test, "gate_difference": f"{decision.test.difference:+.4f}",
            "gate_difference_interval": f"{decision.test.interval.low:+.4f}..{decision.test.interval.high:+.4f}",
        }
        if decision.test.p_value is not None:
            record["gate_p_value"] = f"{decision.test.p_value:.4g}"
    return record


@gate_champion.on_rollback
def _restore_champion(transaction: Transaction) -> None:
    versions.undo_move(
        transaction.get("tracking_uri"), transaction.get("model_name"), transaction.get("candidate"),
        transaction.get("previous_champion"),
    )


def _remember(**values: Any) -> None:
    """Keep what this task changed in its transaction, for its rollback hook."""
    transaction = get_transaction()
    assert transaction is not None  # every task run has one
    for key, value in values.items():
        transaction.set(key, value)
