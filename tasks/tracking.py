"""The MLflow side of a pipeline run: its parent run, the dataset, one child run per variant, the close."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mlflow.entities import RunStatus
from prefect import get_run_logger, runtime, task

from shrinkflow.core.config import PipelineConfig
from shrinkflow.core.data import DatasetRef
from shrinkflow.core.evaluation import describe_metrics
from shrinkflow.core.summary import SummaryRow
from shrinkflow.core.variants import Failure, Variant
from shrinkflow.core.workspace import Workspace
from shrinkflow.tracking import runs
from shrinkflow.tracking.runs import TrackingRef
from shrinkflow.tasks.options import IO_TASK, SHIPPING_TASK


@task(name="start-tracking", **IO_TASK)
def start_tracking(config: PipelineConfig, workspace: Workspace) -> TrackingRef:
    uri = workspace.tracking_uri()
    # Only the embedded SQLite store keeps artifacts in the workspace; a server decides for itself.
    artifact_root = workspace.mlartifacts if uri.startswith("sqlite:") else None
    # The parent run takes the flow run's name: distinct, readable, and the same in both UIs.
    return runs.start_parent_run(
        uri, config, artifact_root, workspace.runs, runtime.flow_run.name, runtime.flow_run.id,
        prefect_flow_run_page(runtime.flow_run.id),
    )


def prefect_flow_run_page(flow_run_id: str) -> str | None:
    """The flow run's page in the Prefect UI, if the server this run reports to serves one: a temporary server (that
    of `shrinkflow run` without PREFECT_API_URL, or a test harness) has no UI, and it is gone after the run."""
    import httpx
    from prefect.settings import get_current_settings

    ui_url = get_current_settings().ui_url
    if not ui_url:
        return None
    try:  # the UI's settings name the UI versions it serves: none on a server without the UI
        serves_ui = bool(httpx.get(f"{ui_url}/ui-settings", timeout=5).json().get("available_uis"))
    except (httpx.HTTPError, ValueError):
        serves_ui = False
    return f"{ui_url}/runs/flow-run/{flow_run_id}" if serves_ui else None


@task(name="record-dataset", **IO_TASK)
def record_dataset(tracking_ref: TrackingRef, dataset: DatasetRef) -> None:
    runs.log_dataset(tracking_ref, dataset, reused=dataset.built_by != str(runtime.flow_run.id))


@task(name="record", task_run_name="record-{variant.name}", **IO_TASK)
def record_variant(tracking_ref: TrackingRef, variant: Variant) -> Variant:
    """The variant's child run in this pipeline run: its lineage as params, its metrics and history, its
    plot. Returns it with its child run's id."""
    reused = variant.built_by != str(runtime.flow_run.id)
    run_id = runs.record_variant(tracking_ref, variant, reused=reused)
    get_run_logger().info(
        "%s: %s%s", variant.name, describe_metrics(variant.metrics), " (reused from an earlier run)" if reused else ""
    )
    return dataclasses.replace(variant, run_id=run_id)


@task(name="record-failure", task_run_name="record-{failure.name}", **IO_TASK)
def record_failure(tracking_ref: TrackingRef, failure: Failure) -> Failure:
    """A FAILED child run for a variant that could not be built, saying why."""
    return dataclasses.replace(failure, run_id=runs.record_failure(tracking_ref, failure))


def record(tracking_ref: TrackingRef, built: Variant | Failure) -> Variant | Failure:
    """Record what a stage gave: a variant, or why there is none."""
    if isinstance(built, Failure):
        return record_failure(tracking_ref, built)
    return record_variant(tracking_ref, built)


@task(name="finish-tracking", **SHIPPING_TASK)
def finish_tracking(tracking_ref: TrackingRef, rows: Sequence[SummaryRow]) -> None:
    """The summary and headline metrics on the parent run, then close it as FINISHED."""
    runs.log_summary(tracking_ref, rows)
    runs.finish_pipeline(tracking_ref, RunStatus.FINISHED)
